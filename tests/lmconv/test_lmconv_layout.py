"""LMConv's one parameter layout and how it runs (``dgmjax.nn.compute.Compute``).

Each stream's gated resnets are one stack ``u_stream/...`` [num, ...] run by the executor
(``dgmjax.nn.repeat``, whose own test shows scan = unroll = loop on a toy body): the tree
does not grow with R, the traced loss runs one scan per stream and does not grow with R
either; ``unroll=True`` gives the same loss; forward mode works (jvp of the loss = the
gradient's inner product with the tangent); variables of the old per-resnet layout are
refused with one line and converted exactly by ``dgmjax.convert.lmconv.stack_resnets``;
remat reaches the body and a remat model samples (the cached sampler runs the same
stacked network) the same images; dropout draws a channel mask per resnet.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax.convert.lmconv import stack_resnets
from dgmjax.nn.stacking import unstack_tree
from tests.jaxpr_walk import equations

SHAPE, BINS, R, F = (5, 5, 2), 8, 2, 4
BASE = dict(image_shape=SHAPE, num_bins=BINS, filters=F, resnets=R, mixtures=2, dropout=0.0,
            orders=("s_curve",))
X = jax.random.randint(jax.random.PRNGKey(0), (2,) + SHAPE, 0, BINS).astype(jnp.uint8)
STREAMS = ("up_layers_0", "up_layers_1", "up_layers_2", "down_layers_0", "down_layers_1",
           "down_layers_2")


def _jit(fn, **kw):
  """jax.jit without XLA:CPU's LLVM optimisation passes: half the compile time of these
  tiny programs (the properties tested are those of the traced computation)."""
  return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kw)


def _create(**kw):
  return dgmjax.models.create("lmconv", **dict(BASE, **kw))


@pytest.fixture(scope="module")
def model_and_vars():
  """The default model and variables moved away from the init (numpy noise: nothing to
  compile), so a swapped or mis-sliced resnet shows."""
  model = _create()
  v = jax.jit(model.init)(jax.random.PRNGKey(1), X)
  rng = np.random.default_rng(2)
  v = jax.tree_util.tree_map(
      lambda a: np.asarray(a) + 0.1 * rng.standard_normal(a.shape).astype(np.float32), v)
  return model, v


def _loss(model):
  return lambda p: model.loss({"params": p}, X, jax.random.PRNGKey(3), train=False)[0]


def test_tree_is_stacked_and_flat_in_depth_and_the_loss_scans(model_and_vars):
  model, v = model_and_vars
  deep = jax.eval_shape(_create(resnets=4).init, jax.random.PRNGKey(0), X)["params"]
  assert len(jax.tree_util.tree_leaves(deep)) == len(jax.tree_util.tree_leaves(v["params"]))
  for name in STREAMS:
    assert set(deep[name]) == {"u_stream"}, name
  assert deep["up_layers_1"]["u_stream"]["conv_input"]["kernel"].shape == (4, 3, 3, 2 * F, F)
  assert deep["down_layers_2"]["u_stream"]["nin_skip"]["kernel"].shape == (5, 2 * F, F)
  assert v["params"]["down_layers_0"]["u_stream"]["conv_out"]["kernel"].shape == \
      (R, 3, 3, 2 * F, 2 * F)
  eqs = equations(_loss(model), v["params"])
  assert sum(e.primitive.name == "scan" for e in eqs) == 6          # one per stream
  assert len(equations(_loss(_create(resnets=4)), deep)) == len(eqs)  # flat in R
  unrolled = _create(compute=dict(unroll=True))
  assert all(e.params["unroll"] == e.params["length"] for e in equations(
      _loss(unrolled), v["params"]) if e.primitive.name == "scan")


def test_unroll_gives_the_same_loss_and_forward_mode_works(model_and_vars):
  """jvp of the loss along a random tangent = <grad, tangent>; the fully unrolled
  executor computes the same loss."""
  model, v = model_and_vars
  p = v["params"]
  rng = np.random.default_rng(4)
  tangent = jax.tree_util.tree_map(
      lambda a: rng.standard_normal(a.shape).astype(np.float32), p)

  def both(p, t):
    value, grad = jax.value_and_grad(_loss(model))(p)
    _, jvp = jax.jvp(_loss(model), (p,), (t,))
    inner = sum(jnp.vdot(g, u) for g, u in zip(jax.tree_util.tree_leaves(grad),
                                               jax.tree_util.tree_leaves(t)))
    return value, jvp, inner
  value, jvp, inner = _jit(both)(p, tangent)
  np.testing.assert_allclose(jvp, inner, rtol=1e-4)
  assert abs(float(jvp)) > 1e-3
  unrolled = _jit(_loss(_create(compute=dict(unroll=True))))(p)
  np.testing.assert_allclose(unrolled, value, rtol=1e-6)


def test_old_per_resnet_layout_is_refused_and_converted(model_and_vars):
  model, v = model_and_vars
  old = {"params": dict(v["params"])}
  for name in STREAMS:
    old["params"][name] = {f"u_stream_{j}": t for j, t in enumerate(
        unstack_tree(v["params"][name]["u_stream"], xp=np))}
  for call in (lambda: model.loss(old, X, jax.random.PRNGKey(0)),
               lambda: model.sample(old, jax.random.PRNGKey(0), 1)):
    with pytest.raises(ValueError, match=r"old per-resnet layout .*"
                       r"dgmjax\.convert\.lmconv\.stack_resnets\(variables\)$"):
      call()
  back = stack_resnets(old)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(v)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack_resnets(v), v)  # unchanged
  gap = {"params": {"up_layers_0": {"u_stream_0": {}, "u_stream_2": {}}}}
  with pytest.raises(ValueError, match="not 0..1"):
    stack_resnets(gap)


def test_remat_reaches_the_body_and_a_remat_model_samples_the_same(model_and_vars):
  model, v = model_and_vars
  policy = "dots_with_no_batch_dims_saveable"
  for remat, want in (("full", None), (policy, getattr(jax.checkpoint_policies, policy))):
    m = _create(compute=dict(remat=remat))
    eqs = equations(jax.grad(_loss(m)), v["params"])
    assert {repr(e.params.get("policy")) for e in eqs
            if e.primitive.name in ("remat2", "checkpoint")} == {repr(want)}
  # the cached sampler runs the remat-ed stack (no tracer leaks) and draws the same images
  remat = _create(compute=dict(remat="full"))
  sample = lambda m: _jit(lambda v, k: m.sample(v, k, 2))(v, jax.random.PRNGKey(7))
  got = sample(remat)
  assert got.shape == (2,) + SHAPE and got.dtype == jnp.uint8
  np.testing.assert_array_equal(got, sample(model))


def test_dropout_draws_a_channel_mask_per_resnet(model_and_vars):
  _, v = model_and_vars
  model = _create(dropout=0.5)
  loss = lambda p: model.loss({"params": p}, X[:1], jax.random.PRNGKey(11))[0]
  value, grads = _jit(jax.value_and_grad(loss))(v["params"])
  assert np.isfinite(value)
  # Dropout2d drops whole input channels of conv_out for the (one) example, so the
  # kernel's gradient is exactly zero on those channels: the gradient shows each layer's
  # channel mask. Layers with the same mask would mean the dropout RNG is not split.
  for name in ("up_layers_0", "down_layers_1"):
    g = np.asarray(grads[name]["u_stream"]["conv_out"]["kernel"])   # [num,k,k,2F,2F]
    kept = np.any(g != 0, axis=(1, 2, 4))                           # [num, 2F]
    assert kept.any(axis=1).all() and not kept.all(axis=1).any(), (name, kept)
    assert len({tuple(row) for row in kept}) == len(kept), (name, kept)
