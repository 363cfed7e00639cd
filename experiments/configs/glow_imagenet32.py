"""Glow on downsampled ImageNet 32x32 as in the paper (table 2 and appendix).

    dgmjax train --config experiments/configs/glow_imagenet32.py --workdir runs/glow_imagenet32

L=3 levels, K=48 steps, width 512, affine coupling, invertible 1x1 convolutions,
learned top prior, openai/glow's network options, Adamax 1e-3 with 10 warm-up epochs,
batch 512 and Polyak averaging (openai/glow README command for imagenet-oord 32).
Expected: 4.09 bits/dim (paper); not reproduced here.
Builds on ``paper_glow`` of experiments/configs/glow_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import finalize, split_variant

paper_glow = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                         "glow_cifar10.py"))["paper_glow"]


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  # 1.28M images / 512 = 2500 steps per epoch: 10 warm-up epochs, beta2 = 1 - 1/2500.
  c = paper_glow("downsampled_imagenet/32x32", variant, levels=3, steps=48,
                 num_steps=500_000, batch_size=512, init_batch_size=512, b2=0.9996,
                 warmup_steps=25_000, smoke_batch=8)
  return finalize(c, shared)
