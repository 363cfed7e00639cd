"""Glow on downsampled ImageNet 64x64 as in the paper (table 2 and appendix).

    dgmjax train --config experiments/configs/glow_imagenet64.py --workdir runs/glow_imagenet64

L=4 levels, K=48 steps, width 512, affine coupling, invertible 1x1 convolutions,
learned top prior, openai/glow's network options, Adamax 1e-3 with 10 warm-up epochs,
batch 512 and Polyak averaging (openai/glow README command for imagenet-oord 64).
Expected: 3.81 bits/dim (paper); not reproduced here.
Builds on experiments/configs/glow_imagenet32.py: the 64x64 data and one more level.
"""

import os
import runpy

imagenet32 = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                         "glow_imagenet32.py"))["get_config"]


def get_config(variant=None):
  c = imagenet32(variant)   # finalized and locked: only existing keys change
  c.data.name = "downsampled_imagenet/64x64"
  c.model.levels = 4
  return c
