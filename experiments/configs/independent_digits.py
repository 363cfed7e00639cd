"""The independent baseline on ``digits``: one categorical per pixel.

    dgmjax train --config experiments/configs/independent_digits.py \\
        --workdir runs/independent_digits

Expected: test bits/dim about 2.2-2.4 (uniform over 17 levels is log2(17) = 4.09).
Every real model must beat it.
"""

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("independent", "digits")
  c.train.update(dict(num_steps=600, batch_size=64, eval_every=200, checkpoint_every=200,
                      log_every=50))
  c.optim.update(dict(lr=5e-2))
  if variant == "smoke":
    c.train.update(dict(num_steps=20, eval_every=10, checkpoint_every=10, log_every=5,
                        num_samples=16))
  return finalize(c, shared)
