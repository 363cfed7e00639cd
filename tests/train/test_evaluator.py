"""The one whole-split evaluator (``dgmjax.train.evaluator``): every example once, in
order, in fixed-shape batches whose padding is cut, batch i scored with fold_in(rng, i);
the mean in float64; the training loop, ``dgmjax eval`` and ``dgmjax compare`` all score
through it."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import images
from dgmjax.train import config as config_lib
from dgmjax.train import evaluator, loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")


class _Rows:
  def __init__(self, x):
    self.x = x

  def __len__(self):
    return len(self.x)

  def get(self, idx):
    return self.x[idx]


def test_every_row_once_in_order_with_a_key_per_batch():
  x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
  rng = jax.random.key(5)

  def step(v, batch, r):   # [B, 2]: the row, and a number drawn from the batch's key
    b = batch["image"].shape[0]
    u = jax.random.uniform(r, ())
    return np.stack([np.asarray(batch["image"]).reshape(b) + v, np.full(b, float(u))], 1)

  outs = list(evaluator.map_split(step, 100, _Rows(x), batch_size=4, rng=rng))
  assert [o.shape for o in outs] == [(4, 2), (4, 2), (2, 2)]     # padding rows cut
  rows = np.concatenate(outs)
  np.testing.assert_array_equal(rows[:, 0], np.arange(10) + 100)
  for i, o in enumerate(outs):
    assert np.all(o[:, 1] == float(jax.random.uniform(jax.random.fold_in(rng, i), ())))
  mean = evaluator.split_mean(step, 100, _Rows(x), batch_size=4, rng=rng)
  assert mean.dtype == np.float64 and mean.shape == (2,)
  assert mean[0] == pytest.approx(104.5)
  with pytest.raises(ValueError, match="no example"):
    evaluator.split_mean(step, 0, _Rows(x[:0]), batch_size=4)


def test_loop_eval_command_and_compare_score_through_it(monkeypatch):
  cfg = config_lib.load_config(CONFIG + ":smoke")
  cfg.train.eval_batch_size = 128                       # 300 test images: 3 batches
  exp = loop.build(cfg)
  variables = exp.model.init(jax.random.key(0), exp.train_data.get(np.arange(64)))
  calls = []
  real = evaluator.map_split
  monkeypatch.setattr(evaluator, "map_split",
                      lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
  x = exp.test_data.get(np.arange(len(exp.test_data)))
  want = np.asarray(exp.model.log_prob(variables, jnp.asarray(x), None), np.float64).mean()
  # the training loop
  bpd = loop.evaluate(exp, variables)
  assert bpd == pytest.approx(float(images.bits_per_dim(want, exp.model.num_dims)), rel=1e-6)
  # dgmjax eval (every figure but the plain one: [B, K] per batch)
  from dgmjax.commands.evaluation import _mean_over_test
  got = _mean_over_test(exp, variables,
                        lambda v, x, rng: jnp.stack([exp.model.log_prob(v, x), 2 * exp.model
                                                     .log_prob(v, x)], axis=1))
  np.testing.assert_allclose(got, [want, 2 * want], rtol=1e-6)
  # dgmjax compare
  from experiments.compare.runs import batched
  lp = batched(lambda xb: exp.model.log_prob(variables, xb), exp.test_data, 128, np.float64)
  assert lp.shape == (300,) and lp.mean() == pytest.approx(want, rel=1e-6)
  assert calls == [300, 300, 300]
