"""Glow on MNIST (28x28, 256 levels), K=32 steps, L=2 levels, width 512.

    dgmjax train --config experiments/configs/glow_mnist.py --workdir runs/glow_mnist

L=2 keeps 28x28 divisible (28 -> 14x14x4 -> 7x7x8) without padding. Affine coupling,
plain 1x1 convolutions and openai/glow's network options (ActNorm in the coupling
network, edge-bias padding, log-scale factor 3), Adamax 1e-3 with warm-up and Polyak
averaging as for CIFAR-10. Expected: about 1.05 bits/dim (the number reported for Glow
on MNIST, e.g. in FFJORD's table); not reproduced here (needs a GPU and hours).
Builds on ``paper_glow`` of experiments/configs/glow_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import finalize, split_variant

paper_glow = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                         "glow_cifar10.py"))["paper_glow"]


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  # openai/glow: Adamax with beta2 = 1 - 1/(steps per epoch) = 1 - 1/938 at batch 64,
  # 10 warm-up epochs, Polyak averaging with the same beta2.
  c = paper_glow("mnist", variant, levels=2, steps=32, num_steps=100_000, batch_size=64,
                 init_batch_size=256, b2=0.999, warmup_steps=9375, smoke_batch=16,
                 smoke_steps=2)
  return finalize(c, shared)
