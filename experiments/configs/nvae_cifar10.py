"""NVAE on CIFAR-10 (32x32x3, 256 levels, 10-component discretised logistic mixture).

    dgmjax train --config experiments/configs/nvae_cifar10.py --workdir runs/nvae_cifar10

Paper (Vahdat & Kautz 2020, Table 2): 2.91 bits/dim (importance-weighted, 1000 samples).
The official README command: 1 scale, 30 groups, 20 latents per group, 128 channels,
2 cells per group, 1 pre/post block of 2 cells, 1 flow pair per group, lambda 1e-2;
130.9M parameters. Batch 256 (32 per GPU x 8), 400 epochs. Not run here (2-core CPU).

Also holds ``official_recipe`` (the official optimiser and KL schedule) and
``smoke_variant`` (the tiny ``:smoke`` run), which every NVAE config uses.
"""

import math

from dgmjax.train.config import base_config, finalize, split_variant

D = 32 * 32 * 3
STEPS_PER_EPOCH = 50000 // 256
STEPS = 400 * STEPS_PER_EPOCH


def official_recipe(c, dims, num_steps, warmup_steps):
  """NVlabs/NVAE's training recipe for ``num_steps`` steps of a model of ``dims``
  dimensions: Adamax lr 1e-2, eps 1e-3, coupled weight decay 3e-4, linear warm-up over
  ``warmup_steps`` then cosine to 1e-4, with eps and weight decay divided by D ln 2
  because ``loss`` is the official nats objective divided by D ln 2 (identical updates);
  the KL coefficient held at 1e-4 for 0.01% of the steps (at least one), then warmed up
  to 1 over 30% of them; exact discretised-logistic edges."""
  c.train.update(dict(num_steps=num_steps))
  c.model.update(dict(kl_warmup_steps=int(0.3 * num_steps),
                      kl_const_steps=max(1, int(1e-4 * num_steps)), kl_const_coeff=1e-4,
                      dmol_edge="exact"))
  c.optim.update(dict(name="adamax", lr=1e-2, eps=1e-3 / (dims * math.log(2)),
                      weight_decay=3e-4 / (dims * math.log(2)), warmup_steps=warmup_steps,
                      schedule="cosine", end_lr_factor=1e-2))
  return c


def smoke_variant(c, batch_size, **model):
  """The ``:smoke`` variant of an NVAE config: 4 channels, 2 groups of 2 latents per
  scale, one cell everywhere (plus ``model`` keys), 20 steps of batch ``batch_size``."""
  c.model.update(dict(channels=4, groups_per_scale=2, latents_per_group=2, cells_per_group=1,
                      preprocess_cells=1, postprocess_cells=1, kl_warmup_steps=10,
                      kl_const_steps=1, **model))
  c.train.update(dict(num_steps=20, batch_size=batch_size, eval_batch_size=4 * batch_size,
                      log_every=5, eval_every=20, checkpoint_every=20, num_samples=4,
                      init_batch_size=batch_size))
  c.optim.update(dict(warmup_steps=2))
  return c


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("nvae", "cifar10")
  c.model.update(dict(
      channels=128, scales=1, groups_per_scale=30, ada_groups=False, latents_per_group=20,
      cells_per_group=2, preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1,
      postprocess_cells=2, num_flows=1, use_se=True, num_mixtures=10, weight_decay_norm=1e-2,
      compute=dict(remat="full")))
  c.train.update(dict(batch_size=256, eval_batch_size=256, log_every=100, eval_every=5000,
                      checkpoint_every=2000))
  official_recipe(c, D, STEPS, warmup_steps=5 * STEPS_PER_EPOCH)
  if variant == "smoke":
    smoke_variant(c, 8, num_mixtures=2, compute=dict(remat="none"))
  return finalize(c, shared)
