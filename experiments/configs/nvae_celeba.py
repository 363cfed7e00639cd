"""NVAE on CelebA 64x64 (256 levels, 10-component discretised logistic mixture).

    dgmjax train --config experiments/configs/nvae_celeba.py --workdir runs/nvae_celeba

Paper (Vahdat & Kautz 2020, Table 2): 2.03 bits/dim. The official README command:
3 scales, groups [20, 10, 5] (ada_groups), 20 latents per group, 64 channels, 2 cells
per group, 1 pre/post block of 2 cells, 1 flow pair per group, lambda 1e-1. Batch 128
(16 per GPU x 8), 90 epochs. Not run here (2-core CPU).
"""

import math

from dgmjax.train.config import base_config, finalize, split_variant

D = 64 * 64 * 3
STEPS_PER_EPOCH = 162770 // 128
STEPS = 90 * STEPS_PER_EPOCH


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("nvae", "celeb_a")
  c.model.update(dict(
      channels=64, scales=3, groups_per_scale=20, ada_groups=True, latents_per_group=20,
      cells_per_group=2, preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1,
      postprocess_cells=2, num_flows=1, use_se=True, num_mixtures=10,
      kl_warmup_steps=int(0.3 * STEPS), kl_const_steps=max(1, int(1e-4 * STEPS)),
      kl_const_coeff=1e-4, dmol_edge="exact", weight_decay_norm=1e-1,
      compute=dict(remat="full")))
  c.train.update(dict(num_steps=STEPS, batch_size=128, eval_batch_size=128, log_every=100,
                      eval_every=5000, checkpoint_every=2000))
  c.optim.update(dict(name="adamax", lr=1e-2, eps=1e-3 / (D * math.log(2)),
                      weight_decay=3e-4 / (D * math.log(2)), warmup_steps=5 * STEPS_PER_EPOCH,
                      schedule="cosine", end_lr_factor=1e-2))
  if variant == "smoke":
    c.model.update(dict(channels=4, scales=2, groups_per_scale=2, latents_per_group=2,
                        cells_per_group=1, preprocess_cells=1, postprocess_cells=1,
                        num_mixtures=2, kl_warmup_steps=10, kl_const_steps=1,
                        compute=dict(remat="none")))
    c.train.update(dict(num_steps=20, batch_size=4, eval_batch_size=16, log_every=5,
                        eval_every=20, checkpoint_every=20, num_samples=4, init_batch_size=4))
    c.optim.update(dict(warmup_steps=2))
  return finalize(c, shared)
