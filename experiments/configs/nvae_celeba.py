"""NVAE on CelebA 64x64 (256 levels, 10-component discretised logistic mixture).

    dgmjax train --config experiments/configs/nvae_celeba.py --workdir runs/nvae_celeba

Paper (Vahdat & Kautz 2020, Table 2): 2.03 bits/dim. The official README command:
3 scales, groups [20, 10, 5] (ada_groups), 20 latents per group, 64 channels, 2 cells
per group, 1 pre/post block of 2 cells, 1 flow pair per group, lambda 1e-1. Batch 128
(16 per GPU x 8), 90 epochs. Not run here (2-core CPU).
Optimiser, KL schedule and smoke variant: ``official_recipe`` and ``smoke_variant`` of
experiments/configs/nvae_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import base_config, finalize, split_variant

_cifar10 = runpy.run_path(os.path.join(os.path.dirname(__file__), "nvae_cifar10.py"))
official_recipe, smoke_variant = _cifar10["official_recipe"], _cifar10["smoke_variant"]

D = 64 * 64 * 3
STEPS_PER_EPOCH = 162770 // 128
STEPS = 90 * STEPS_PER_EPOCH


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("nvae", "celeb_a")
  c.model.update(dict(
      channels=64, scales=3, groups_per_scale=20, ada_groups=True, latents_per_group=20,
      cells_per_group=2, preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1,
      postprocess_cells=2, num_flows=1, use_se=True, num_mixtures=10, weight_decay_norm=1e-1,
      compute=dict(remat="full")))
  c.train.update(dict(batch_size=128, eval_batch_size=128, log_every=100, eval_every=5000,
                      checkpoint_every=2000))
  official_recipe(c, D, STEPS, warmup_steps=5 * STEPS_PER_EPOCH)
  if variant == "smoke":
    smoke_variant(c, 4, scales=2, num_mixtures=2, compute=dict(remat="none"))
  return finalize(c, shared)
