"""NVAE on down-sampled ImageNet 32x32 (256 levels, 10-component logistic mixture).

    dgmjax train --config experiments/configs/nvae_imagenet32.py --workdir runs/nvae_imagenet32

Paper (Vahdat & Kautz 2020, Table 2): 3.92 bits/dim. The official README command:
1 scale, 28 groups, 20 latents per group, 192 channels, 2 cells per group, 1 pre/post
block of 2 cells, 1 flow pair per group, lambda annealed from 1 to 1e-2. Batch 576
(24 per GPU x 24), 45 epochs, 1 warm-up epoch. Not run here (2-core CPU).
Optimiser, KL schedule and smoke variant: ``official_recipe`` and ``smoke_variant`` of
experiments/configs/nvae_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import base_config, finalize, split_variant

_cifar10 = runpy.run_path(os.path.join(os.path.dirname(__file__), "nvae_cifar10.py"))
official_recipe, smoke_variant = _cifar10["official_recipe"], _cifar10["smoke_variant"]

D = 32 * 32 * 3
STEPS_PER_EPOCH = 1281167 // 576
STEPS = 45 * STEPS_PER_EPOCH


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("nvae", "downsampled_imagenet/32x32")
  c.model.update(dict(
      channels=192, scales=1, groups_per_scale=28, ada_groups=False, latents_per_group=20,
      cells_per_group=2, preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1,
      postprocess_cells=2, num_flows=1, use_se=True, num_mixtures=10, weight_decay_norm=1e-2,
      weight_decay_norm_init=1.0, weight_decay_norm_anneal=True, compute=dict(remat="full")))
  c.train.update(dict(batch_size=576, eval_batch_size=256, log_every=100, eval_every=5000,
                      checkpoint_every=2000))
  official_recipe(c, D, STEPS, warmup_steps=STEPS_PER_EPOCH)
  if variant == "smoke":
    smoke_variant(c, 8, num_mixtures=2, compute=dict(remat="none"))
  return finalize(c, shared)
