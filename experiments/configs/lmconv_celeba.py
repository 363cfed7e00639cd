"""LMConv on CelebA at 64x64 with 5-bit colour (32 levels).

    dgmjax train --config experiments/configs/lmconv_celeba.py --workdir runs/lmconv_celeba

ajayjain/lmconv README (``-d celebahq --celeba_size 64 --n_bits 5 --nr_filters 320 -md 2
--order s_curve --randomize_order --normalization pono -dp 0 -b 32 -c 2e6``): F=320, R=5,
10-component RGB logistic mixture over 32 levels, the 8 s-curve variants. The paper
trains on CelebA-HQ for image completion and reports no likelihood for this setting;
expected: samples/completions of faces, bits/dim measured by ``dgmjax eval``.
Builds on ``paper_lmconv`` of experiments/configs/lmconv_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import finalize, split_variant

paper_lmconv = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                           "lmconv_cifar10.py"))["paper_lmconv"]


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = paper_lmconv("celeb_a", filters=320, compute=dict(remat="full"))
  c.data.update(dict(n_bits=5))
  c.train.update(dict(num_steps=400_000, eval_every=20_000, eval_batch_size=32,
                      num_samples=8))
  if variant == "smoke":
    c.model.update(dict(filters=8, resnets=1, mixtures=2, orders=("s_curve",)))
    c.train.update(dict(num_steps=10, batch_size=2, eval_every=5, checkpoint_every=5,
                        log_every=5, num_samples=1, eval_batch_size=4))
  return finalize(c, shared)
