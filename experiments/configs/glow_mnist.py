"""Glow on MNIST (28x28, 256 levels), K=32 steps, L=2 levels, width 512.

    dgmjax train --config experiments/configs/glow_mnist.py --workdir runs/glow_mnist

L=2 keeps 28x28 divisible (28 -> 14x14x4 -> 7x7x8) without padding. Affine coupling,
plain 1x1 convolutions and openai/glow's network options (ActNorm in the coupling
network, edge-bias padding, log-scale factor 3), Adamax 1e-3 with warm-up and Polyak
averaging as for CIFAR-10. Expected: about 1.05 bits/dim (the number reported for Glow
on MNIST, e.g. in FFJORD's table); not reproduced here (needs a GPU and hours).
"""

from ml_collections.config_dict import placeholder

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("glow", "mnist")
  # Each level's K steps are one stack run as a scan (compiles once, as fast as unrolled on
  # CPU, less memory: experiments/results/HISTORY.md); :unroll unrolls it.
  # reversible=True: O(1)-memory gradient in depth (dgmjax.flows.reversible); watch the
  # rev_recon_err metric (trust the gradient while it stays below ~1e-3).
  c.model.update(dict(levels=2, steps=32, width=512, coupling="affine", permutation="conv",
                      learn_top=True, net_actnorm=True, logscale_factor=3.0, edge_bias=True,
                      reversible=False,
                      num_classes=placeholder(int)))  # --config.model.num_classes=N
  c.train.update(dict(num_steps=100_000, batch_size=64, eval_every=5000,
                      checkpoint_every=5000, log_every=100, init_batch_size=256))
  # openai/glow: Adamax with beta2 = 1 - 1/(steps per epoch) = 1 - 1/938 at batch 64,
  # 10 warm-up epochs, Polyak averaging with the same beta2.
  c.optim.update(dict(name="adamax", lr=1e-3, b1=0.9, b2=0.999, warmup_steps=9375,
                      ema_decay=0.999))
  if variant == "smoke":
    c.model.update(dict(steps=2, width=16))
    c.train.update(dict(num_steps=20, batch_size=16, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=16, init_batch_size=32,
                        eval_batch_size=64))
    c.optim.update(dict(warmup_steps=5))
  return finalize(c, shared)
