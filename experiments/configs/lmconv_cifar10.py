"""LMConv on CIFAR-10 (32x32x3, 256 levels), the paper's configuration.

    dgmjax train --config experiments/configs/lmconv_cifar10.py --workdir runs/lmconv_cifar10

ajayjain/lmconv README: ``main.py -d cifar -b 32 --ours -c 2e6 -k 3 --normalization pono
--order s_curve --randomize_order -dp 0``: F=160, R=5, 10-component discretised logistic
mixture with RGB coupling, PONO, no dropout, the 8 s-curve variants, Adam lr 2e-4 decayed
by 0.999995 per step, gradient clipping at 2e6. Expected: 2.89 bits/dim (paper, test
ensemble of the 8 orders); not reproduced here (the paper trained on GPUs for weeks).

Also holds ``paper_lmconv``, the network and recipe lmconv_binarized_mnist.py and
lmconv_celeba.py build on.
"""

import math

from dgmjax.train.config import base_config, finalize, split_variant


def paper_lmconv(dataset, *, filters=160, **model):
  """ajayjain/lmconv's network and recipe on ``dataset``, not yet finalized: ``filters``
  filters, R=5 gated resnets per stage, 3x3 kernels dilated up to 2, PONO, no dropout,
  the 8 s-curve variants (plus ``model`` keys); Adam lr 2e-4 decayed by 0.999995 per
  step, gradient clipping at 2e6, batch 32."""
  c = base_config("lmconv", dataset)
  c.model.update(dict(filters=filters, resnets=5, mixtures=10, kernel_size=3, max_dilation=2,
                      orders=("s_curve:all",), normalization="pono", dropout=0.0, **model))
  c.train.update(dict(batch_size=32, checkpoint_every=5000, log_every=100))
  c.optim.update(dict(name="adam", lr=2e-4, schedule="exponential", decay_rate=0.5,
                      decay_steps=round(math.log(0.5) / math.log(0.999995)),
                      clip_norm=2e6))
  return c


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = paper_lmconv("cifar10")
  c.train.update(dict(num_steps=1_000_000, eval_every=20_000, eval_batch_size=64,
                      num_samples=16))
  if variant == "smoke":
    c.model.update(dict(filters=8, resnets=1, mixtures=2, orders=("s_curve",)))
    c.train.update(dict(num_steps=20, batch_size=4, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=2, eval_batch_size=16))
  return finalize(c, shared)
