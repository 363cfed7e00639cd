"""Glow on CelebA at 64x64 with 5-bit colour (32 levels).

    dgmjax train --config experiments/configs/glow_celeba.py --workdir runs/glow_celeba

L=4 levels (64 -> 4x4x96 at the top), K=32 steps, width 512, additive coupling
(openai/glow's CelebA-HQ runs use additive coupling with 5 bits), invertible 1x1
convolutions, learned top prior, Adamax 1e-3 with warm-up and Polyak averaging.
Expected: the paper reports no 64x64 CelebA number (its CelebA-HQ 256x256 5-bit run
reaches 1.03 bits/dim); rosinality/glow-pytorch trains this resolution for samples.
"""

from ml_collections.config_dict import placeholder

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("glow", "celeb_a")
  c.data.update(dict(n_bits=5))
  # Each level's K steps are one stack run as a scan (compiles once, as fast as unrolled on
  # CPU, less memory: experiments/results/HISTORY.md); :unroll unrolls it.
  # reversible=True: O(1)-memory gradient in depth (dgmjax.flows.reversible); watch the
  # rev_recon_err metric (trust the gradient while it stays below ~1e-3).
  c.model.update(dict(levels=4, steps=32, width=512, coupling="additive", permutation="conv",
                      learn_top=True, net_actnorm=True, logscale_factor=3.0, edge_bias=True,
                      reversible=False,
                      num_classes=placeholder(int)))  # --config.model.num_classes=N
  c.train.update(dict(num_steps=300_000, batch_size=64, eval_every=5000,
                      checkpoint_every=5000, log_every=100, init_batch_size=256))
  c.optim.update(dict(name="adamax", lr=1e-3, b1=0.9, b2=0.999, warmup_steps=5000,
                      ema_decay=0.999))
  if variant == "smoke":
    c.model.update(dict(steps=1, width=16))
    c.train.update(dict(num_steps=20, batch_size=8, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=8, init_batch_size=16, eval_batch_size=32))
    c.optim.update(dict(warmup_steps=5))
  return finalize(c, shared)
