"""NVAE's scanned layout (``scan=True``): the same model as the unrolled one under
``dgmjax.nvae.layout``'s conversion, with each scale's groups traced once."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import models
from dgmjax.nvae import regularizers as reg
from dgmjax.nvae.layers import SPECTRAL_COLLECTION
from dgmjax.nvae.layout import layout_map, spectral_order, stack_groups, unstack_groups
from tests.jaxpr_walk import equations

# Two scales with ada_groups (3 groups at the finest scale, 1 at the coarsest: decoder
# scale 0 has no scanned group, scale 1 has three), two cells per group, one IAF pair.
KW = dict(channels=4, scales=2, groups_per_scale=3, ada_groups=True, min_groups_per_scale=1,
          latents_per_group=2, cells_per_group=2, preprocess_blocks=1, preprocess_cells=1,
          postprocess_blocks=1, postprocess_cells=1, num_flows=1, weight_decay_norm=0.1,
          use_se=True)
SHAPE = (8, 8, 1)


def _models(**kw):
  base = models.create("nvae", SHAPE, 2, **{**KW, **kw})
  return base, dataclasses.replace(base, scan=True)


def _perturb(variables, scale=0.05):
  """Parameters moved off their init (numpy noise: no per-shape compiles)."""
  rs = np.random.RandomState(7)
  return {**variables, "params": jax.tree_util.tree_map(
      lambda a: np.asarray(a) + scale * rs.standard_normal(a.shape).astype(np.float32),
      variables["params"])}


# XLA's cheapest compilation: these tests check values, not speed.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(fn):
  return jax.jit(fn, compiler_options=FAST)


@pytest.fixture(scope="module")
def pair():
  """(unrolled, scanned, x, unrolled variables, their stacked copy, posterior noise). The
  scanned init (the cheaper compile) is unstacked to give the unrolled variables."""
  unrolled, scanned = _models()
  x = np.random.RandomState(0).randint(0, 2, (3,) + SHAPE).astype(np.uint8)
  v = _perturb(unstack_groups(scanned, _jit(scanned._init)(jax.random.PRNGKey(0), x)))
  rs = np.random.RandomState(1)
  eps = [jnp.asarray(rs.standard_normal((3,) + s), jnp.float32)
         for s in unrolled.latent_shapes()]
  return unrolled, scanned, x, v, stack_groups(scanned, v), eps


def _net_terms(model, variables, x, eps):
  """Train-mode forward with given posterior noise: (objective, (logits, terms, new
  batch_stats, spectral loss))."""
  def objective(params):
    (logits, terms), new = model.net.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, model._inputs(x),
        train=True, eps=eps, mutable=["batch_stats", SPECTRAL_COLLECTION])
    recon = -model.recon_log_prob(logits, x)
    sr, _ = reg.spectral_loss(reg.group_weights(new[SPECTRAL_COLLECTION]),
                              variables["spectral"])
    obj = jnp.mean(recon + jnp.sum(terms["kl"], 0)) + 0.1 * (sr + reg.batchnorm_loss(params))
    return obj, (logits, terms, new["batch_stats"], sr)
  return _jit(jax.value_and_grad(objective, has_aux=True))(variables["params"])


def _close(a, b, rtol, atol=0.0):
  jax.tree_util.tree_map(lambda p, q: np.testing.assert_allclose(
      np.asarray(p), np.asarray(q), rtol=rtol, atol=atol), a, b)


def test_scanned_equals_unrolled(pair):
  """Same logits, KL per group, log q/log p, BN statistics, spectral and BN regularisers
  and gradient (unstacked) as the unrolled model, in training mode."""
  unrolled, scanned, x, v, vs, eps = pair
  (obj_u, (lu, tu, bu, sru)), gu = _net_terms(unrolled, v, x, eps)
  (obj_s, (ls, ts, bs, srs)), gs = _net_terms(scanned, vs, x, eps)
  np.testing.assert_allclose(ls, lu, rtol=1e-5, atol=1e-5)
  _close(ts, tu, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(srs, sru, rtol=1e-6)
  np.testing.assert_allclose(obj_s, obj_u, rtol=1e-6)
  back = unstack_groups(scanned, {"params": gs, "batch_stats": bs})
  _close(back["batch_stats"], bu, rtol=1e-5, atol=1e-6)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(gu))
  _close(back["params"], gu, rtol=1e-4, atol=1e-5 * scale)


def test_deterministic_paths_equal(pair):
  """encode with the posterior means and decode on given z agree between the layouts
  (inference-mode BN); prior sampling at a temperature runs on the scanned layout."""
  unrolled, scanned, x, v, vs, _ = pair
  zs_u = _jit(unrolled.encode)(v, x)
  zs_s = _jit(scanned.encode)(vs, x)
  assert len(zs_s) == len(zs_u) == sum(unrolled.groups)
  _close(zs_s, zs_u, rtol=1e-5, atol=1e-6)
  _close(_jit(scanned.decode_logits)(vs, zs_u), _jit(unrolled.decode_logits)(v, zs_u),
         rtol=1e-5, atol=1e-5)
  s = _jit(lambda vv, r: scanned.sample(vv, r, 4, temperature=0.7))(vs, jax.random.PRNGKey(2))
  assert s.shape == (4,) + SHAPE and s.dtype == np.uint8 and set(np.unique(s)) <= {0, 1}


def test_layout_round_trip_and_structure(pair):
  """stack_groups gives exactly the scan model's variable tree (leading group axes),
  unstack_groups inverts it bit for bit, the spectral rows follow their kernels."""
  unrolled, scanned, x, v, vs, _ = pair
  ref = jax.eval_shape(lambda r: scanned.init(r, x), jax.random.PRNGKey(0))
  assert (jax.tree_util.tree_structure(jax.tree_util.tree_map(jnp.asarray, vs))
          == jax.tree_util.tree_structure(ref))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), vs, ref)
  cells = vs["params"]["dec_groups_1"]["cells_0"]["ops_0"]["expand"]["conv"]["kernel"]
  assert cells.shape[0] == 3 and "dec_groups_0" not in vs["params"]
  back = unstack_groups(scanned, vs)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(v)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), back, v)
  # Power-iteration rows moved with their kernels: u^T W v per kernel is unchanged.
  def sown(model, variables):
    return reg.group_weights(model.net.apply(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]},
        model._inputs(x), eps="mean", mutable=[SPECTRAL_COLLECTION])[1][SPECTRAL_COLLECTION])
  wu = _jit(lambda vv: sown(unrolled, vv))(v)
  ws = _jit(lambda vv: sown(scanned, vv))(vs)
  order_u = spectral_order(v["params"])
  order_s = spectral_order(vs["params"], layout_map(scanned.groups, 2, 1))
  sigma = lambda w, s: np.einsum("nr,nrc,nc->n", s["u"], w, s["v"])
  for k in wu:
    rows = [order_u[k].index(m) for m in order_s[k]]
    assert sorted(rows) == list(range(len(rows)))
    np.testing.assert_allclose(sigma(ws[k], vs["spectral"][k]),
                               sigma(wu[k], v["spectral"][k])[rows], rtol=1e-5, atol=1e-6)


def test_unstack_rejects_other_layout(pair):
  unrolled, scanned, x, v, vs, _ = pair
  other = dataclasses.replace(scanned, cells_per_group=1)
  with pytest.raises(ValueError, match="groups/cells/num_flows"):
    unstack_groups(other, vs)


def test_traced_size_flat_in_depth():
  """The scanned loss traces each scale's groups once: its jaxpr does not grow from 2 to
  6 groups per scale (the unrolled one grows ~3x), and it holds scan loops."""
  sizes = {}
  for groups in (2, 6):
    for scan in (False, True):
      m = models.create("nvae", SHAPE, 2, **{**KW, "groups_per_scale": groups,
                                             "ada_groups": False, "scan": scan})
      x = jnp.zeros((2,) + SHAPE, jnp.uint8)
      v = jax.eval_shape(lambda r, m=m: m.init(r, x), jax.random.PRNGKey(0))
      eqs = equations(lambda vv, m=m: m.loss(vv, x, jax.random.PRNGKey(0))[0], v)
      sizes[groups, scan] = len(eqs)
      if scan:
        assert sum(e.primitive.name == "scan" for e in eqs) >= 4
  assert sizes[6, True] == sizes[2, True]
  assert sizes[6, False] > 2 * sizes[2, False]
