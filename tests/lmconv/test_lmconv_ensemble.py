"""The LMConv order ensemble, written once (``dgmjax.lmconv.ensemble``):
log (1/N) sum_k p_{pi_k}(x) of the per-order exact log-likelihoods; ``log_prob`` with no
order is it over the configured orders; spec parsing and names; orders given as specs,
arrays, traced arrays or concrete arrays inside a traced function agree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax.lmconv import ensemble

ORDERS = ("s_curve:0", "s_curve:5", "raster")


@pytest.fixture(scope="module")
def lmconv():
  model = dgmjax.models.create("lmconv", image_shape=(4, 4, 1), num_bins=4, filters=4,
                               resnets=1, mixtures=2, dropout=0.0, orders=ORDERS)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (3, 4, 4, 1)), jnp.uint8)
  return model, model.init(jax.random.key(0), x), x


def test_parse_orders_names_each_order():
  names, arrs = ensemble.parse_orders("s_curve:all, raster", 4, 4)
  assert names == [f"s_curve:{k}" for k in range(8)] + ["raster"]
  assert arrs.shape == (9, 16) and arrs.dtype == np.int32
  perm = np.arange(16)[::-1]
  names, arrs = ensemble.parse_orders(["hilbert:2", perm], 4, 4)
  assert names == ["hilbert:2", "perm:1"]
  np.testing.assert_array_equal(arrs[1], perm)
  for bad in ("", "nope"):
    with pytest.raises(ValueError):
      ensemble.parse_orders(bad, 4, 4)


def test_ensemble_is_the_log_mean_of_the_orders(lmconv):
  model, variables, x = lmconv
  ens, per = ensemble.ensemble_log_prob(model, variables, x, None)       # the configured 3
  assert per.shape == (3, 3) and ens.shape == (3,)
  _, arrs = ensemble.parse_orders(ORDERS, 4, 4)
  one = jax.jit(lambda v, x, o: model.log_prob(v, x, order=o))          # masks traced
  single = np.stack([np.asarray(one(variables, x, jnp.asarray(o))) for o in arrs])
  np.testing.assert_allclose(per, single, rtol=1e-5)
  p64 = np.asarray(per, np.float64)
  top = p64.max(0)
  np.testing.assert_allclose(ens, np.log(np.mean(np.exp(p64 - top), 0)) + top, rtol=1e-5)
  assert np.all(p64.min(0) <= np.asarray(ens) + 1e-4) and np.all(np.asarray(ens) <= top + 1e-4)
  # the model's own evaluation is this ensemble; specs and arrays give the same orders
  np.testing.assert_allclose(jax.jit(model.log_prob)(variables, x), ens, rtol=1e-5)
  np.testing.assert_array_equal(ensemble.ensemble_log_prob(model, variables, x, ORDERS)[1], per)
  inside = jax.jit(lambda v, x: ensemble.per_order_log_prob(model, v, x, arrs))(variables, x)
  np.testing.assert_allclose(inside, per, rtol=1e-5)     # concrete orders in a traced fn
  with pytest.raises(ValueError, match="LMConv"):
    ensemble.ensemble_log_prob(dgmjax.models.create("independent", image_shape=(4, 4, 1),
                                                    num_bins=4), variables, x)
