"""Every Glow bijector: invertibility (eager and jitted), forward log-det = -inverse
log-det, log-det = log|det| of the brute-force Jacobian, ActNorm's data-dependent
init, zero-initialised couplings, shape validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.flows import bijectors as bj
from dgmjax.flows.priors import SplitPrior, gaussian_log_prob

SHAPE = (2, 4, 4, 4)  # [B,H,W,C]


def _perturb(variables, rng, scale=0.1):
  """Adds noise to every parameter so no layer sits at its (often trivial) init."""
  params = variables["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(rng, len(leaves))
  leaves = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
  return {**variables, "params": jax.tree_util.tree_unflatten(tree, leaves)}


def _x(shape=SHAPE, seed=0):
  return 1.5 * jax.random.normal(jax.random.PRNGKey(seed), shape) + 0.3


CASES = {
    "actnorm": lambda: bj.ActNorm(),
    "actnorm_logscale": lambda: bj.ActNorm(logscale_factor=3.0),
    "invconv": lambda: bj.InvConv1x1(),
    "invconv_lu": lambda: bj.InvConv1x1LU(),
    "reverse": lambda: bj.Permute("reverse"),
    "shuffle": lambda: bj.Permute("shuffle", seed=3),
    "affine": lambda: bj.Coupling(width=8, affine=True),
    "additive": lambda: bj.Coupling(width=8, affine=False),
    "affine_openai_net": lambda: bj.Coupling(width=8, affine=True, net_actnorm=True,
                                             edge_bias=True),
    "squeeze": lambda: bj.Squeeze(),
    "unsqueeze": lambda: bj.Unsqueeze(),
    "chain": lambda: bj.Chain((bj.ActNorm(), bj.InvConv1x1LU(), bj.Coupling(width=8))),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
  layer = CASES[request.param]()
  x = _x()
  variables = jax.jit(lambda k, x: layer.init(k, x, method=layer.forward_and_log_det))(
      jax.random.PRNGKey(1), x)
  if "params" in variables:
    variables = _perturb(variables, jax.random.PRNGKey(2))
  return request.param, layer, variables, x


@pytest.mark.parametrize("use_jit", [False, True])
def test_round_trip_and_log_det_sign(built, use_jit):
  _, layer, v, x = built
  fwd = lambda v, x: layer.apply(v, x, method=layer.forward_and_log_det)
  inv = lambda v, y: layer.apply(v, y, method=layer.inverse_and_log_det)
  if use_jit:
    fwd, inv = jax.jit(fwd), jax.jit(inv)
  y, ld_f = fwd(v, x)
  x_back, ld_i = inv(v, y)
  assert ld_f.shape == (x.shape[0],) and ld_f.dtype == jnp.float32
  np.testing.assert_allclose(x_back, x, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(ld_i, -ld_f, atol=1e-5, rtol=1e-5)


def test_log_det_matches_jacobian(built):
  """log_det of one example == log|det d vec(y) / d vec(x)| from jax.jacfwd."""
  name, layer, v, _ = built
  x1 = _x((1, 2, 2, 4), seed=5)
  f = lambda flat: layer.apply(v, flat.reshape(x1.shape),
                               method=layer.forward_and_log_det)[0].reshape(-1)
  jac = jax.jacfwd(f)(x1.reshape(-1))  # float32 Jacobian, determinant in float64
  sign, logabs = np.linalg.slogdet(np.asarray(jac, np.float64))
  _, ld = layer.apply(v, x1, method=layer.forward_and_log_det)
  assert sign != 0
  np.testing.assert_allclose(float(ld[0]), logabs, atol=2e-4, rtol=1e-4)


def test_actnorm_data_dependent_init():
  x = _x((8, 4, 4, 3)) * jnp.array([0.5, 2.0, 7.0]) + jnp.array([-1.0, 0.0, 3.0])
  for layer in (bj.ActNorm(), bj.ActNorm(logscale_factor=3.0)):
    v = layer.init(jax.random.PRNGKey(0), x, method=layer.forward_and_log_det)
    y, ld = layer.apply(v, x, method=layer.forward_and_log_det)
    np.testing.assert_allclose(jnp.mean(y, (0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, (0, 1, 2)), 1.0, atol=1e-4)
    std = jnp.std(x, (0, 1, 2))
    np.testing.assert_allclose(ld, -16 * jnp.sum(jnp.log(std)) * jnp.ones(8), rtol=1e-4)


def test_invconv_inits_are_rotations():
  x = _x()
  for layer in (bj.InvConv1x1(), bj.InvConv1x1LU()):
    v = layer.init(jax.random.PRNGKey(3), x, method=layer.forward_and_log_det)
    y, ld = layer.apply(v, x, method=layer.forward_and_log_det)
    w = jax.jacfwd(lambda p: layer.apply(v, p.reshape(1, 1, 1, 4),
                                         method=layer.forward_and_log_det)[0].reshape(4))(
        jnp.ones(4))
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(ld, 0.0, atol=1e-4)
    # a rotation keeps per-pixel norms
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_zero_initialised_couplings():
  x = _x()
  add = bj.Coupling(width=8, affine=False)
  v = add.init(jax.random.PRNGKey(0), x, method=add.forward_and_log_det)
  y, ld = add.apply(v, x, method=add.forward_and_log_det)
  np.testing.assert_array_equal(y, x)
  np.testing.assert_array_equal(ld, 0.0)
  aff = bj.Coupling(width=8, affine=True)
  v = aff.init(jax.random.PRNGKey(0), x, method=aff.forward_and_log_det)
  y, ld = aff.apply(v, x, method=aff.forward_and_log_det)
  s = 1.0 / (1.0 + math.exp(-2.0))  # zero network output -> scale sigmoid(0 + 2)
  np.testing.assert_allclose(y[..., :2], x[..., :2])
  np.testing.assert_allclose(y[..., 2:], x[..., 2:] * s, rtol=1e-6)
  np.testing.assert_allclose(ld, 4 * 4 * 2 * math.log(s), rtol=1e-5)


def test_chain_equals_sequential_application():
  x = _x()
  layers = (bj.ActNorm(), bj.InvConv1x1LU(), bj.Coupling(width=8))
  chain = bj.Chain(layers)
  v = _perturb(chain.init(jax.random.PRNGKey(0), x, method=chain.forward_and_log_det),
               jax.random.PRNGKey(1))
  y, ld = chain.apply(v, x, method=chain.forward_and_log_det)
  h, total = x, 0.0
  for i, layer in enumerate(layers):
    sub = {col: tree[f"layers_{i}"] for col, tree in v.items() if f"layers_{i}" in tree}
    h, l = layer.apply(sub, h, method=layer.forward_and_log_det)
    total = total + l
  np.testing.assert_allclose(y, h, rtol=1e-6)
  np.testing.assert_allclose(ld, total, rtol=1e-6)


def test_squeeze_layout_and_split_prior():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  s = bj.squeeze2d(x)
  # channel 2*dh + dw of output pixel (i, j) is input pixel (2i+dh, 2j+dw)
  for dh in range(2):
    for dw in range(2):
      np.testing.assert_array_equal(s[:, :, :, 2 * dh + dw], x[:, dh::2, dw::2, 0])
  np.testing.assert_array_equal(bj.unsqueeze2d(s), x)
  prior = SplitPrior()
  z = _x((2, 2, 2, 8))
  v = _perturb(prior.init(jax.random.PRNGKey(0), z, method=prior.split), jax.random.PRNGKey(1))
  z1, z2, lp = prior.apply(v, z, method=prior.split)
  mean, logsd = prior.apply(v, z1)
  ref = jnp.sum(-0.5 * jnp.log(2 * jnp.pi) - logsd - 0.5 * ((z2 - mean) / jnp.exp(logsd)) ** 2,
                axis=(1, 2, 3))
  np.testing.assert_allclose(lp, ref, rtol=1e-5)
  np.testing.assert_allclose(gaussian_log_prob(z2, 0 * z2, 0 * z2),
                             jnp.sum(-0.5 * jnp.log(2 * jnp.pi) - 0.5 * z2 ** 2, (1, 2, 3)), rtol=1e-6)


def test_bad_input_raises_value_error_naming_the_shape():
  x = _x()
  layer = bj.ActNorm()
  v = layer.init(jax.random.PRNGKey(0), x, method=layer.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    layer.apply(v, x[..., :3], method=layer.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    layer.apply(v, x[0], method=layer.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,2h,2w,C\]"):
    bj.Squeeze().apply({}, x[:, :3], method=bj.Squeeze.forward_and_log_det)
  lu = bj.InvConv1x1LU()
  v = lu.init(jax.random.PRNGKey(0), x, method=lu.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    lu.apply(v, jnp.zeros((2, 4, 4, 6)), method=lu.inverse_and_log_det)
  cp = bj.Coupling(width=8)
  v = cp.init(jax.random.PRNGKey(0), x, method=cp.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    cp.apply(v, jnp.zeros((2, 4, 4, 8)), method=cp.forward_and_log_det)
  with pytest.raises(ValueError, match=r"\[B,H,W,2c\]"):
    cp.init(jax.random.PRNGKey(0), jnp.zeros((2, 4, 4, 3)), method=cp.forward_and_log_det)


@pytest.mark.parametrize("padding", ["zeros", "ones", "edge"])
def test_conv3x3_paddings_match_explicit_padding(padding):
  """The border-term convolution equals padding explicitly (value 1, or zeros plus
  openai's edge-indicator channel) and a VALID convolution."""
  x = _x((2, 5, 4, 3))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3 + (padding == "edge"), 6))
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  if padding == "edge":
    edge = jnp.pad(jnp.zeros((2, 5, 4, 1)), pad, constant_values=1.0)
    xp = jnp.concatenate([jnp.pad(x, pad), edge], -1)
  else:
    xp = jnp.pad(x, pad, constant_values=1.0 if padding == "ones" else 0.0)
  ref = jax.lax.conv_general_dilated(xp, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(bj.conv3x3(x, kernel, padding), ref, rtol=1e-5, atol=1e-5)
