"""LMConv on CelebA at 64x64 with 5-bit colour (32 levels).

    dgmjax train --config experiments/configs/lmconv_celeba.py --workdir runs/lmconv_celeba

ajayjain/lmconv README (``-d celebahq --celeba_size 64 --n_bits 5 --nr_filters 320 -md 2
--order s_curve --randomize_order --normalization pono -dp 0 -b 32 -c 2e6``): F=320, R=5,
10-component RGB logistic mixture over 32 levels, the 8 s-curve variants. The paper
trains on CelebA-HQ for image completion and reports no likelihood for this setting;
expected: samples/completions of faces, bits/dim measured by ``dgmjax eval``.
"""

import math

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("lmconv", "celeb_a")
  c.data.update(dict(n_bits=5))
  c.model.update(dict(filters=320, resnets=5, mixtures=10, kernel_size=3, max_dilation=2,
                      orders=("s_curve:all",), normalization="pono", dropout=0.0,
                      compute=dict(remat="full")))
  c.train.update(dict(num_steps=400_000, batch_size=32, eval_every=20_000,
                      checkpoint_every=5000, log_every=100, eval_batch_size=32,
                      num_samples=8))
  c.optim.update(dict(name="adam", lr=2e-4, schedule="exponential", decay_rate=0.5,
                      decay_steps=round(math.log(0.5) / math.log(0.999995)),
                      clip_norm=2e6))
  if variant == "smoke":
    c.model.update(dict(filters=8, resnets=1, mixtures=2, orders=("s_curve",)))
    c.train.update(dict(num_steps=10, batch_size=2, eval_every=5, checkpoint_every=5,
                        log_every=5, num_samples=1, eval_batch_size=4))
  return finalize(c, shared)
