"""Reversible Glow (``compute.remat="reversible"``, ``dgmjax.flows.reversible``): on the
same variables as the standard Glow, its gradient equals standard autodiff (float32 and
x64) for every coupling x permutation, with class conditioning and openai's network
options; the gradient's temp memory does not grow with depth while the standard one does;
the reconstruction-error metric; forward mode is refused (reverse mode only, documented);
and the Glow bad-input checks of ``sample`` and ``encode``.

Gradient closeness is measured per parameter array relative to that array's largest
entry: max|g_rev - g_std| <= rtol * max|g_std| (elementwise relative error is meaningless
for entries that are zero up to rounding)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax.flows.glow import Glow
from tests.flows.glow_util import FAST_COMPILE, fast_jit, perturb

SHAPE = (4, 4, 2)
REVERSIBLE = dict(remat="reversible")  # how the model runs (dgmjax.nn.compute)
# Every permutation once and every coupling twice (their code paths are independent),
# x64 on two of them: (coupling, permutation, also in x64). The fast suite runs each
# coupling once; the fixed permutations run with the slow tests.
COMBOS = [("affine", "lu", True), pytest.param("affine", "reverse", False, marks=pytest.mark.slow),
          ("additive", "conv", False),
          pytest.param("additive", "shuffle", True, marks=pytest.mark.slow)]


def _assert_grads_close(g_rev, g_std, rtol):
  """Per parameter array: max|g_rev - g_std| <= rtol * max|g_std|."""
  assert jax.tree_util.tree_structure(g_rev) == jax.tree_util.tree_structure(g_std)
  flat_r = jax.tree_util.tree_leaves_with_path(g_rev)
  flat_s = jax.tree_util.tree_leaves(g_std)
  for (path, a), b in zip(flat_r, flat_s):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    assert scale > 0, jax.tree_util.keystr(path)  # every parameter gets a gradient
    err = np.max(np.abs(a - b)) / scale
    assert err <= rtol, (jax.tree_util.keystr(path), err)


def _run(f, *args):
  """jax.jit(f)(*args), compiled with ``FAST_COMPILE``."""
  return fast_jit(f)(*args)


def _models(coupling, permutation, levels=2, dtype="float32"):
  """(standard, reversible) Glows of one architecture."""
  kw = dict(levels=levels, steps=2, width=8, coupling=coupling, permutation=permutation)
  return (dgmjax.models.create("glow", SHAPE, 16, compute=dict(dtype=dtype), **kw),
          dgmjax.models.create("glow", SHAPE, 16, compute=dict(REVERSIBLE, dtype=dtype), **kw))


def _data(n=4):
  return jnp.asarray(np.random.RandomState(0).randint(0, 16, (n,) + SHAPE), jnp.uint8)


@pytest.mark.parametrize("coupling,permutation,x64", COMBOS)
def test_gradient_equals_autodiff_float32_and_x64(coupling, permutation, x64):
  """Loss and every parameter's gradient of the reversible model equal those of the
  standard model on the same variables: relative 1e-4 in float32, 1e-8 with
  jax_enable_x64 (parameters, inputs and the coupling networks in float64). One level:
  the levels above compose through the split prior (``test_class_conditioning...``)."""
  plain, rev = _models(coupling, permutation, levels=1)
  x = _data()
  v = perturb(fast_jit(plain.init)(jax.random.PRNGKey(0), x), 1)
  rng = jax.random.PRNGKey(2)

  def grad(m, variables):
    rest = {k: a for k, a in variables.items() if k != "params"}
    return _run(jax.value_and_grad(lambda p: m.loss({"params": p, **rest}, x, rng)[0]),
                variables["params"])

  (l_std, g_std), (l_rev, g_rev) = grad(plain, v), grad(rev, v)
  np.testing.assert_allclose(l_rev, l_std, rtol=1e-6)
  _assert_grads_close(g_rev, g_std, 1e-4)
  if not x64:
    return
  with jax.enable_x64(True):
    plain64, rev64 = _models(coupling, permutation, levels=1, dtype="float64")
    y = (np.asarray(x, np.float64) + np.random.RandomState(1).uniform(size=x.shape)) / 16 - 0.5
    to64 = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), t)

    def grad64(m, variables):
      rest = to64({k: a for k, a in variables.items() if k != "params"})
      f = lambda p: jnp.sum(m.module.apply({"params": p, **rest}, jnp.asarray(y),
                                           method=Glow.log_density)[0])
      return _run(jax.value_and_grad(f), to64(variables["params"]))

    (l_std, g_std), (l_rev, g_rev) = grad64(plain64, v), grad64(rev64, v)
    assert g_rev["blocks_0"]["flows"]["actnorm"]["loc"].dtype == jnp.float64
    np.testing.assert_allclose(l_rev, l_std, rtol=1e-12)
    _assert_grads_close(g_rev, g_std, 1e-8)


@pytest.mark.slow
def test_class_conditioning_and_openai_options():
  """Class-conditional prior and class loss, ActNorm in the coupling network (its
  data-dependent init), edge-bias padding, log-scale factor 3, two levels (the split
  prior's gradient reaches the level below through the reversible steps)."""
  from sklearn.datasets import load_digits
  d = load_digits()
  x = jnp.asarray(d.images[:16].astype(np.uint8).reshape(-1, 8, 8, 1))
  y = jnp.asarray(d.target[:16])
  kw = dict(levels=2, steps=2, width=8, coupling="affine", permutation="conv", num_classes=10,
            class_loss_weight=0.5, net_actnorm=True, logscale_factor=3.0, edge_bias=True)
  plain = dgmjax.models.create("glow", (8, 8, 1), 17, **kw)
  rev = dgmjax.models.create("glow", (8, 8, 1), 17, compute=REVERSIBLE, **kw)
  v = perturb(fast_jit(plain.init)(jax.random.PRNGKey(0), x, y), 1)
  rng = jax.random.PRNGKey(2)

  def grad(m, variables):
    rest = {k: a for k, a in variables.items() if k != "params"}
    return _run(jax.value_and_grad(lambda p: m.loss({"params": p, **rest}, x, rng, y=y),
                                   has_aux=True), variables["params"])

  (l_std, aux_std), g_std = grad(plain, v)
  (l_rev, aux_rev), g_rev = grad(rev, v)
  np.testing.assert_allclose(l_rev, l_std, rtol=1e-6)
  np.testing.assert_allclose(aux_rev["metrics"]["class_bits"], aux_std["metrics"]["class_bits"],
                             rtol=1e-6)
  _assert_grads_close(g_rev, g_std, 1e-4)
  assert "rev_recon_err" not in aux_std["metrics"]
  assert 0 <= float(aux_rev["metrics"]["rev_recon_err"]) < 1e-5


def test_init_layout_round_trip_sampling_and_no_forward_mode():
  """A reversible model inits into the one stacked layout (ActNorm initialised per step
  from the data), decodes its own latents and samples; forward mode through its loss is
  refused (a custom_vjp: reverse mode only, as documented)."""
  plain, rev = _models("affine", "shuffle")
  x = _data(8)
  v = fast_jit(rev.init)(jax.random.PRNGKey(0), x)
  locs = v["params"]["blocks_0"]["flows"]["actnorm"]["loc"]
  assert locs.shape == (2, 8) and not np.allclose(locs[0], locs[1])
  assert (jax.tree_util.tree_structure(jax.eval_shape(plain.init, jax.random.PRNGKey(0), x))
          == jax.tree_util.tree_structure(v))
  v = perturb(v, 1)

  @fast_jit
  def run(v):
    zs, _ = rev.encode(v, x)
    return rev.decode(v, zs), rev.sample(v, jax.random.PRNGKey(3), 3, temperature=0.7)

  back, s = run(v)
  np.testing.assert_allclose(back, rev._continuous(x, None), atol=1e-5)
  assert s.shape == (3,) + SHAPE and s.dtype == jnp.uint8
  loss = lambda p: rev.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]
  with pytest.raises(TypeError, match="forward-mode autodiff"):
    jax.jvp(loss, (v["params"],), (v["params"],))


def test_reconstruction_error_metric_flags_a_lossy_step():
  """``rev_recon_err`` is ~float32 epsilon for a healthy model and large when a step
  destroys information in float32: a coupling shift t ~ 1e4 makes x_b + t round away
  x_b's low bits, so the rebuilt x_b = y_b / s - t is off by ~ulp(1e4) ~ 1e-3."""
  _, rev = _models("affine", "lu")
  x = _data(8)
  v = perturb(fast_jit(rev.init)(jax.random.PRNGKey(0), x), 1)
  metric = fast_jit(lambda v: rev.loss(v, x, jax.random.PRNGKey(2))[1]["metrics"])
  errs = fast_jit(lambda v: rev.reconstruction_errors(v, x))
  m = metric(v)
  e = errs(v)
  assert e.shape == (2, 2) and float(jnp.max(e[:, 1])) < 1e-5
  assert 0 <= float(m["rev_recon_err"]) < 1e-5

  def shift(bias):  # step 1 of level 0: the t half of the zero conv's bias
    return jnp.asarray(bias).at[1, 4:].set(1e4)
  net = v["params"]["blocks_0"]["flows"]["coupling"]["net"]
  bad = jax.tree_util.tree_map(lambda a: a, v)
  bad["params"]["blocks_0"]["flows"]["coupling"]["net"] = {
      **net, "zero_conv": {**net["zero_conv"], "bias": shift(net["zero_conv"]["bias"])}}
  assert float(metric(bad)["rev_recon_err"]) > 1e-4
  assert float(errs(bad)[0, 1]) > 1e-4
  with pytest.raises(ValueError, match="reversible"):
    _models("affine", "lu")[0].reconstruction_errors(v, x)


@pytest.mark.parametrize("reversible", [True, False])
def test_gradient_memory_flat_in_depth(reversible):
  """XLA's temp bytes of the training gradient at width 32, L=1, for K=8 and K=64 steps
  per level: the reversible one must stay flat (ratio <= 1.25; measured 1.00), the
  standard one (the same stack, ordinary autodiff of the scan) must grow (measured 6.6x;
  7.4x at width 64, L=3, at 3x the compile time),
  so the test fails if the reversible path silently falls back to storing the activations.

  Compile only (nothing runs), on an 8x8x3 image, batch 4: the ratio does not depend on
  the image size (16x16 batch 8 measured the same 1.00 and 7.5x). The stack makes compile
  time independent of K, so K=64 costs no more than K=8; XLA's LLVM optimisation is
  turned down (``FAST_COMPILE``), which leaves buffer assignment, and so the temp sizes,
  unchanged (checked: identical bytes).
  """
  x = jnp.zeros((4, 8, 8, 3), jnp.uint8)

  def temp_bytes(steps):
    kw = dict(compute=REVERSIBLE) if reversible else {}
    m = dgmjax.models.create("glow", (8, 8, 3), 256, levels=1, steps=steps, width=32, **kw)
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
    rest = {k: a for k, a in v.items() if k != "params"}
    grad = jax.jit(jax.grad(lambda p, r: m.loss({"params": p, **r}, x,
                                                 jax.random.PRNGKey(1))[0]))
    compiled = grad.lower(v["params"], rest).compile(compiler_options=FAST_COMPILE)
    return compiled.memory_analysis().temp_size_in_bytes

  ratio = temp_bytes(64) / temp_bytes(8)
  if reversible:
    assert ratio <= 1.25, ratio
  else:
    assert ratio > 4.0, ratio


def test_sample_and_encode_bad_input():
  model = dgmjax.models.create("glow", (4, 4, 1), 8, levels=1, steps=1, width=4)
  x = jnp.zeros((2, 4, 4, 1), jnp.uint8)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)  # checks come before compute
  rng = jax.random.PRNGKey(0)
  for num in (0, -3, 2.0, True):
    with pytest.raises(ValueError, match="num"):
      model.sample(v, rng, num)
  for t in (0.0, -1.0, math.nan, math.inf, jnp.float32(jnp.nan)):
    with pytest.raises(ValueError, match="temperature must be a finite float > 0"):
      model.sample(v, rng, 2, temperature=t)
  bad = np.zeros((2, 4, 4, 1), np.float32)
  for value, what in ((np.nan, "NaN or inf"), (np.inf, "NaN or inf"),
                      (0.7, r"\[-1/2, 1/2\]"), (-3.0, r"\[-1/2, 1/2\]")):
    bad[0, 1, 2, 0] = value
    with pytest.raises(ValueError, match=what):
      model.encode(v, jnp.asarray(bad))
  with pytest.raises(ValueError, match="reversible_check"):
    dgmjax.models.create("glow", (4, 4, 1), 8, levels=1, steps=1, width=4,
                         compute=REVERSIBLE, reversible_check=-1)
  with pytest.raises(ValueError, match=r"reversible moved into compute.*remat='reversible'"):
    dgmjax.models.create("glow", (4, 4, 1), 8, reversible=True)
  for name in ("lmconv", "nvae"):  # their blocks are not bijections
    with pytest.raises(ValueError, match=f"needs invertible blocks.*{name}'s are not"):
      dgmjax.models.create(name, (4, 4, 1), 8, compute=REVERSIBLE)
