"""The optimiser factory: schedules, clipping, accumulation, bad names."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax.train.config import base_config
from dgmjax.train.optim import learning_rate_schedule, make_optimizer


def _optim(**kw):
  c = base_config("independent", "digits").optim
  c.update(kw)
  return c


def test_warmup_then_cosine():
  sched = learning_rate_schedule(_optim(lr=1.0, warmup_steps=10, schedule="cosine"), 110)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(sched(60)), 0.5 * (1 + math.cos(math.pi * 0.5)), rtol=1e-5)
  np.testing.assert_allclose(float(sched(110)), 0.0, atol=1e-6)


def test_exponential_decay():
  sched = learning_rate_schedule(_optim(lr=2.0, schedule="exponential", decay_steps=10,
                                        decay_rate=0.5), 100)
  np.testing.assert_allclose(float(sched(20)), 0.5, rtol=1e-6)


def test_clipping_acts_on_the_gradients():
  # Adam's first step is scale-invariant, so compare two steps with optax's reference.
  grads = [{"w": jnp.array([30.0, -40.0])}, {"w": jnp.array([0.3, 0.1])}]
  params = {"w": jnp.zeros(2)}

  def run(tx):
    st, out = tx.init(params), None
    for g in grads:
      out, st = tx.update(g, st, params)
    return np.asarray(out["w"])

  ours = run(make_optimizer(_optim(name="adam", lr=0.1, clip_norm=1.0), 10))
  ref = run(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1)))
  unclipped = run(optax.adam(0.1))
  np.testing.assert_allclose(ours, ref, rtol=1e-5)
  assert not np.allclose(ours, unclipped, rtol=1e-3)


def test_gradient_accumulation_averages_micro_steps():
  tx = make_optimizer(_optim(name="adam", lr=1.0), 10, grad_accum=2)
  sgd_like = make_optimizer(_optim(name="adam", lr=1.0), 10)
  params = {"w": jnp.ones(2)}
  st = tx.init(params)
  u1, st = tx.update({"w": jnp.array([1.0, 3.0])}, st, params)
  assert np.all(np.asarray(u1["w"]) == 0.0)  # no update after the first micro-step
  u2, st = tx.update({"w": jnp.array([3.0, 1.0])}, st, params)
  ref, _ = sgd_like.update({"w": jnp.array([2.0, 2.0])}, sgd_like.init(params), params)
  np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(ref["w"]), rtol=1e-6)


def test_coupled_weight_decay_enters_the_gradient():
  tx = make_optimizer(_optim(name="adamax", lr=1.0, weight_decay=0.5, b1=0.0), 10)
  params = {"w": jnp.array([2.0])}
  upd, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
  assert float(upd["w"][0]) < 0  # zero gradient, yet decay pulls w towards 0


@pytest.mark.parametrize("key,value", [("name", "sgdx"), ("schedule", "linearish")])
def test_unknown_names_are_rejected(key, value):
  with pytest.raises(ValueError, match=value):
    make_optimizer(_optim(**{key: value}), 10)
