"""Glow on downsampled ImageNet 64x64 as in the paper (table 2 and appendix).

    dgmjax train --config experiments/configs/glow_imagenet64.py --workdir runs/glow_imagenet64

L=4 levels, K=48 steps, width 512, affine coupling, invertible 1x1 convolutions,
learned top prior, openai/glow's network options, Adamax 1e-3 with 10 warm-up epochs,
batch 512 and Polyak averaging (openai/glow README command for imagenet-oord 64).
Expected: 3.81 bits/dim (paper); not reproduced here.
"""

from ml_collections.config_dict import placeholder

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("glow", "downsampled_imagenet/64x64")
  # Each level's K steps are one stack run as a scan (compiles once, as fast as unrolled on
  # CPU, less memory: experiments/results/HISTORY.md); :unroll unrolls it.
  # reversible=True: O(1)-memory gradient in depth (dgmjax.flows.reversible); watch the
  # rev_recon_err metric (trust the gradient while it stays below ~1e-3).
  c.model.update(dict(levels=4, steps=48, width=512, coupling="affine", permutation="conv",
                      learn_top=True, net_actnorm=True, logscale_factor=3.0, edge_bias=True,
                      reversible=False,
                      num_classes=placeholder(int)))  # --config.model.num_classes=N
  c.train.update(dict(num_steps=500_000, batch_size=512, eval_every=5000,
                      checkpoint_every=5000, log_every=100, init_batch_size=512))
  # 1.28M images / 512 = 2500 steps per epoch: 10 warm-up epochs, beta2 = 1 - 1/2500.
  c.optim.update(dict(name="adamax", lr=1e-3, b1=0.9, b2=0.9996, warmup_steps=25_000,
                      ema_decay=0.9996))
  if variant == "smoke":
    c.model.update(dict(steps=1, width=16))
    c.train.update(dict(num_steps=20, batch_size=8, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=8, init_batch_size=16, eval_batch_size=32))
    c.optim.update(dict(warmup_steps=5))
  return finalize(c, shared)
