"""NVAE on dynamically binarised MNIST (28x28 padded to 32x32, Bernoulli decoder).

    dgmjax train --config experiments/configs/nvae_binarized_mnist.py \\
        --workdir runs/nvae_binarized_mnist

Paper (Vahdat & Kautz 2020, Table 2): 78.01 nats (NLL, importance-weighted with 1000
samples: ``model.log_prob(v, x, rng, num_samples=1000)``). The model is the official
README command: 2 scales, groups [10, 5] (ada_groups), 20 latents per group, 32
channels, 2 cells per group, 2 pre/post blocks of 3 cells, no flows, lambda 1e-2;
33.4M parameters. Batch 400 (200 per GPU x 2), 400 epochs of 150 steps; KL warm-up
over 30% of training. The likelihood covers the 28x28 crop (``crop_to``), so bits/dim
and nats refer to 784 dimensions. Not run here (2-core CPU).

Data: the paper's dynamic binarisation by default: 256-level ``mnist`` with
``data.binarize=True``, so each batch is drawn afresh as b ~ Bernoulli(x / 255) (official
``datasets.py``: ``Binarize`` = ``torch.bernoulli`` of the [0, 1] image, in the train and
test transforms). Variants (``--config ...nvae_binarized_mnist.py:VARIANT``):

- ``fixed``: the fixed binarisation of Larochelle & Murray (tfds ``binarized_mnist``,
  already 2 levels, so ``binarize`` stays off), a different benchmark from the paper's;
- ``smoke``: a tiny model for a quick run; ``fixed_smoke`` both.

Optimiser, KL schedule and smoke variant: ``official_recipe`` and ``smoke_variant`` of
experiments/configs/nvae_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import base_config, finalize, split_variant

_cifar10 = runpy.run_path(os.path.join(os.path.dirname(__file__), "nvae_cifar10.py"))
official_recipe, smoke_variant = _cifar10["official_recipe"], _cifar10["smoke_variant"]

D = 28 * 28
STEPS = 400 * 150


VARIANTS = ("smoke", "fixed", "fixed_smoke")


def get_config(variant=None):
  variant, shared = split_variant(variant, VARIANTS)
  fixed = bool(variant) and variant.startswith("fixed")
  if fixed:   # the fixed tfds binarisation: 2 levels already, nothing to resample
    c = base_config("nvae", "binarized_mnist")
    c.data.update(dict(binarize=False, pad_to=32))
  else:       # the paper's dynamic binarisation of 256-level MNIST
    c = base_config("nvae", "mnist")
    c.data.update(dict(binarize=True, pad_to=32))
  c.model.update(dict(
      channels=32, scales=2, groups_per_scale=10, ada_groups=True, latents_per_group=20,
      cells_per_group=2, preprocess_blocks=2, preprocess_cells=3, postprocess_blocks=2,
      postprocess_cells=3, num_flows=0, use_se=True, crop_to=(28, 28), weight_decay_norm=1e-2))
  c.train.update(dict(batch_size=400, eval_batch_size=500, log_every=100, eval_every=5000,
                      checkpoint_every=5000))
  official_recipe(c, D, STEPS, warmup_steps=5 * 150)
  if variant in ("smoke", "fixed_smoke"):
    smoke_variant(c, 16, preprocess_blocks=1, postprocess_blocks=1)
  return finalize(c, shared)
