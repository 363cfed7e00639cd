"""LMConv ``scan=True``: each stream's gated resnets as one ``nn.scan`` with stacked
parameters is the same model as the unrolled network.

With equivalent variables (``stack_resnets`` of an unrolled init moved away from the init)
the scanned model gives the unrolled model's log-likelihood (1e-5 relative) and gradient
(1e-4 relative, after ``unstack_resnets``) under several orders, for PONO and for weight
norm with the learned mask weight; the layouts convert exactly both ways; the scanned
tree really is stacked and its traced loss really runs six scans; sampling draws the
same images; remat reaches the scan body (same gradient); dropout under the scan draws
a different channel mask per layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax.lmconv import orders
from dgmjax.lmconv.network import StepEngine, stack_resnets, unstack_resnets
from tests.jaxpr_walk import equations

SHAPE, BINS, R, F = (6, 6, 3), 8, 2, 8
BASE = dict(image_shape=SHAPE, num_bins=BINS, filters=F, resnets=R, mixtures=3, dropout=0.0,
            orders=("s_curve",))
X = jax.random.randint(jax.random.PRNGKey(0), (2,) + SHAPE, 0, BINS).astype(jnp.uint8)
NORMS = {"pono": dict(normalization="pono"),
         "wn_mask_weight": dict(normalization="weight_norm", mask_weight=True)}


def _jit(fn):
  """jax.jit without XLA:CPU's LLVM optimisation passes: half the compile time of these
  tiny programs (the properties tested are those of the traced computation)."""
  return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def _create(**kw):
  return dgmjax.models.create("lmconv", **dict(BASE, **kw))


def _perturb(variables, seed):
  """Every leaf moved away from its init (numpy noise: nothing to compile), so a swapped
  or mis-sliced layer shows."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda a: jnp.asarray(a + 0.1 * rng.standard_normal(a.shape).astype(np.float32)),
      variables)


def _models(**kw):
  """(unrolled model, scanned model, unrolled variables, stacked variables)."""
  plain, scanned = _create(**kw), _create(scan=True, **kw)
  v = _perturb(plain.init(jax.random.PRNGKey(1), X), 2)
  return plain, scanned, v, stack_resnets(v)


def _nll_and_grad(model):
  """(params, order int [H*W]) -> (mean NLL in nats, its gradient); compiled once."""
  def nll(params, order):
    return -jnp.mean(model.conditional_log_prob({"params": params}, X, order=order)
                     .sum(axis=(1, 2)))
  return _jit(jax.value_and_grad(nll))


def _assert_grads_close(got, want):
  for path, a in jax.tree_util.tree_flatten_with_path(want)[0]:
    b = got
    for k in path:
      b = b[k.key]
    scale = float(np.max(np.abs(a))) or 1.0
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def pono():
  return _models(**NORMS["pono"])


def _check_equal_loss_and_grad(plain, scanned, v, vs):
  f_plain, f_scan = _nll_and_grad(plain), _nll_and_grad(scanned)
  h, w, _ = SHAPE
  for order in (orders.parse("raster", h, w)[0], orders.parse("s_curve:3", h, w)[0],
                np.random.default_rng(0).permutation(h * w)):
    order = jnp.asarray(order, jnp.int32)
    l_plain, g_plain = f_plain(v["params"], order)
    l_scan, g_scan = f_scan(vs["params"], order)
    np.testing.assert_allclose(l_scan, l_plain, rtol=1e-5)
    _assert_grads_close(unstack_resnets({"params": g_scan})["params"], g_plain)


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_scan_equals_unrolled_loss_and_gradient(norm, pono):
  plain, scanned, v, vs = pono if norm == "pono" else _models(**NORMS[norm])
  _check_equal_loss_and_grad(plain, scanned, v, vs)


def test_stack_unstack_round_trip(pono):
  _, scanned, v, vs = pono
  back = unstack_resnets(vs)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(v)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack_resnets(back), vs)
  # each layout passes through the other's converter unchanged
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack_resnets(vs), vs)
  jax.tree_util.tree_map(np.testing.assert_array_equal, unstack_resnets(v), v)
  # slice j of the stack is resnet j
  np.testing.assert_array_equal(vs["params"]["down_layers_2"]["u_stream"]["nin_skip"]["kernel"][2],
                                v["params"]["down_layers_2"]["u_stream_2"]["nin_skip"]["kernel"])


def test_scanned_tree_is_stacked_and_traced_loss_scans(pono):
  plain, scanned, v, vs = pono
  init = jax.eval_shape(scanned.init, jax.random.PRNGKey(0), X)["params"]
  shapes = jax.tree_util.tree_map(lambda a: a.shape, init)
  assert shapes == jax.tree_util.tree_map(lambda a: a.shape, vs["params"])
  for name in ("up_layers_0", "up_layers_1", "up_layers_2", "down_layers_0", "down_layers_1",
               "down_layers_2"):
    assert set(init[name]) == {"u_stream"}, name
  assert init["up_layers_1"]["u_stream"]["conv_input"]["kernel"].shape == (R, 3, 3, 2 * F, F)
  assert init["down_layers_0"]["u_stream"]["conv_out"]["kernel"].shape == (R, 3, 3, 2 * F, 2 * F)
  assert init["down_layers_2"]["u_stream"]["nin_skip"]["kernel"].shape == (R + 1, 2 * F, F)
  # the input widths the sampler's caches use do not depend on the layout
  assert scanned.conv_input_channels == plain.conv_input_channels

  def scans(model, variables):
    eqs = equations(lambda p: model.loss({"params": p}, X, jax.random.PRNGKey(3))[0],
                    variables["params"])
    return sum(e.primitive.name in ("scan", "while") for e in eqs)
  assert scans(scanned, vs) - scans(plain, v) == 6      # one scan per stream

  # the one-pixel engine cannot run inside a scan body: a clear error, not wrong caches
  pad = 2
  caches = [jnp.zeros((2, SHAPE[0] + 2 * pad, SHAPE[1] + 2 * pad, SHAPE[2] + 1))]  # u_init's
  engine = StepEngine(caches, 0, 0, [jnp.ones((3, 3))] * 3, pad)
  with pytest.raises(TypeError, match="unstack_resnets"):
    scanned.network.apply(vs, jnp.zeros((2, SHAPE[2])), engine)


def test_scanned_samples_equal_unrolled(pono):
  plain, scanned, v, vs = pono
  key = jax.random.PRNGKey(7)
  want = _jit(lambda v, k: plain.sample(v, k, 2))(v, key)
  got = _jit(lambda v, k: scanned.sample(v, k, 2))(vs, key)
  assert got.shape == (2,) + SHAPE and got.dtype == jnp.uint8
  np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def dropout_grads(pono):
  """Training loss and gradient (one example, one dropout key) of the scanned model with
  dropout 0.5, without and with a remat policy: {remat: (loss, grads)}."""
  _, _, _, vs = pono
  out = {}
  for remat in (False, "dots_with_no_batch_dims_saveable"):
    model = _create(scan=True, dropout=0.5, remat=remat)
    fn = _jit(jax.value_and_grad(
        lambda p: model.loss({"params": p}, X[:1], jax.random.PRNGKey(11))[0]))
    out[remat] = (model, fn(vs["params"]))
  return out


def test_remat_reaches_the_scan_body(pono, dropout_grads):
  _, _, _, vs = pono
  policy = "dots_with_no_batch_dims_saveable"
  model, (loss, grads) = dropout_grads[policy]
  eqs = equations(jax.grad(lambda p: model.loss({"params": p}, X[:1], jax.random.PRNGKey(11))[0]),
                  vs["params"])
  got = {repr(e.params.get("policy")) for e in eqs if e.primitive.name in ("remat2", "checkpoint")}
  assert got == {repr(getattr(jax.checkpoint_policies, policy))}
  _, (want_loss, want_grads) = dropout_grads[False]
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  _assert_grads_close(grads, want_grads)


def test_dropout_under_scan_draws_a_mask_per_layer(pono, dropout_grads):
  _, _, _, vs = pono
  model, (loss, grads) = dropout_grads[False]
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  eval_loss = _jit(lambda v: model.loss(v, X[:1], jax.random.PRNGKey(11), train=False)[0])(vs)
  assert not np.allclose(loss, eval_loss)
  # Dropout2d drops whole input channels of conv_out for the (one) example, so the
  # kernel's gradient is exactly zero on those channels: the gradient shows each layer's
  # channel mask. Layers with the same mask would mean the dropout RNG is not split.
  for name in ("up_layers_0", "down_layers_1"):
    g = np.asarray(grads[name]["u_stream"]["conv_out"]["kernel"])   # [num,k,k,2F,2F]
    kept = np.any(g != 0, axis=(1, 2, 4))                           # [num, 2F]
    assert kept.any(axis=1).all() and not kept.all(axis=1).any(), (name, kept)
    assert len({tuple(row) for row in kept}) == len(kept), (name, kept)
