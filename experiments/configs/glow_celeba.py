"""Glow on CelebA at 64x64 with 5-bit colour (32 levels).

    dgmjax train --config experiments/configs/glow_celeba.py --workdir runs/glow_celeba

L=4 levels (64 -> 4x4x96 at the top), K=32 steps, width 512, additive coupling
(openai/glow's CelebA-HQ runs use additive coupling with 5 bits), invertible 1x1
convolutions, learned top prior, Adamax 1e-3 with warm-up and Polyak averaging.
Expected: the paper reports no 64x64 CelebA number (its CelebA-HQ 256x256 5-bit run
reaches 1.03 bits/dim); rosinality/glow-pytorch trains this resolution for samples.
Builds on ``paper_glow`` of experiments/configs/glow_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import finalize, split_variant

paper_glow = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                         "glow_cifar10.py"))["paper_glow"]


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = paper_glow("celeb_a", variant, levels=4, steps=32, num_steps=300_000, batch_size=64,
                 init_batch_size=256, b2=0.999, warmup_steps=5000, smoke_batch=8,
                 coupling="additive")
  c.data.update(dict(n_bits=5))
  return finalize(c, shared)
