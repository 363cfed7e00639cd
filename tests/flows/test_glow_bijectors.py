"""Every Glow bijector: invertibility and forward log-det = -inverse log-det (with and
without ``jax.jit``, as ``chex.variants``), log-det = log|det| of the brute-force
Jacobian in forward and reverse mode (jacfwd = jacrev) with the default compute setting,
ActNorm's data-dependent init, zero-initialised couplings, a coupling given its
conditioner, shape validation."""

from __future__ import annotations

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import Chain
from dgmjax.flows.conditioners import CouplingNet, conv3x3
from dgmjax.flows.couplings import Coupling
from dgmjax.flows.permutations import InvConv1x1, InvConv1x1LU, Permute
from dgmjax.flows.priors import SplitPrior, gaussian_log_prob
from dgmjax.flows.squeeze import Squeeze, Unsqueeze, squeeze2d, unsqueeze2d
from tests.flows.glow_util import fast_jit, perturb

SHAPE = (2, 4, 4, 4)  # [B,H,W,C]


def _x(shape=SHAPE, seed=0):
  return 1.5 * jax.random.normal(jax.random.PRNGKey(seed), shape) + 0.3


def _init(layer, x, seed=0):
  return layer.init(jax.random.PRNGKey(seed), x, method=layer.forward_and_log_det)


def _fwd(layer, v, x):
  return layer.apply(v, x, method=layer.forward_and_log_det)


def _inv(layer, v, y):
  return layer.apply(v, y, method=layer.inverse_and_log_det)


CASES = {
    "actnorm": lambda: ActNorm(),
    "actnorm_logscale": lambda: ActNorm(logscale_factor=3.0),
    "invconv": lambda: InvConv1x1(),
    "invconv_lu": lambda: InvConv1x1LU(),
    "reverse": lambda: Permute("reverse"),
    "shuffle": lambda: Permute("shuffle", seed=3),
    "affine": lambda: Coupling(width=8, affine=True),
    "additive": lambda: Coupling(width=8, affine=False),
    "affine_openai_net": lambda: Coupling(width=8, affine=True, net_actnorm=True,
                                          edge_bias=True),
    "affine_given_conditioner": lambda: Coupling(
        affine=True, conditioner=CouplingNet(8, net_actnorm=True, edge_bias=True)),
    "squeeze": lambda: Squeeze(),
    "unsqueeze": lambda: Unsqueeze(),
    "chain": lambda: Chain((ActNorm(), InvConv1x1LU(), Coupling(width=8))),
}
NAMED_CASES = [(name, name) for name in sorted(CASES)]


@functools.lru_cache(maxsize=None)
def _built(name):
  """(layer, perturbed variables, x) for ``CASES[name]``, built once per module."""
  layer = CASES[name]()
  x = _x()
  variables = fast_jit(lambda k, x: layer.init(k, x, method=layer.forward_and_log_det))(
      jax.random.PRNGKey(1), x)
  if "params" in variables:
    variables = perturb(variables, 2, 0.1)
  return layer, variables, x


class BijectorTest(chex.TestCase):
  """Each case of ``CASES``, eager and under ``jax.jit``."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*NAMED_CASES)
  def test_round_trip_and_log_det_sign(self, name):
    layer, v, x = _built(name)
    y, ld_f = self.variant(functools.partial(_fwd, layer))(v, x)
    x_back, ld_i = self.variant(functools.partial(_inv, layer))(v, y)
    chex.assert_shape([ld_f, ld_i], (x.shape[0],))
    chex.assert_type([ld_f, ld_i], jnp.float32)
    chex.assert_trees_all_close(x_back, x, atol=2e-5, rtol=2e-5)
    chex.assert_trees_all_close(ld_i, -ld_f, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_det_matches_jacobian_in_both_modes(name):
  """log_det of one example == log|det d vec(y) / d vec(x)|, and forward mode works with
  the default compute setting (on CPU the convolutions' fast formulations are
  ``custom_jvp``s with a linear tangent): ``jax.jacfwd`` = ``jax.jacrev``."""
  layer, v, _ = _built(name)
  x1 = _x((1, 2, 2, 4), seed=5)
  f = lambda flat: _fwd(layer, v, flat.reshape(x1.shape))[0].reshape(-1)

  @fast_jit
  def run(z):
    return jax.jacrev(f)(z), jax.jacfwd(f)(z), _fwd(layer, v, z.reshape(x1.shape))[1]
  jac, jac_fwd, ld = run(x1.reshape(-1))  # float32 Jacobian, determinant in float64
  chex.assert_shape(jac, (x1.size, x1.size))
  chex.assert_trees_all_close(jac_fwd, jac, atol=1e-5, rtol=1e-5)
  sign, logabs = np.linalg.slogdet(np.asarray(jac, np.float64))
  assert sign != 0
  chex.assert_trees_all_close(float(ld[0]), logabs, atol=2e-4, rtol=1e-4)


def test_actnorm_data_dependent_init():
  x = _x((8, 4, 4, 3)) * jnp.array([0.5, 2.0, 7.0]) + jnp.array([-1.0, 0.0, 3.0])
  for layer in (ActNorm(), ActNorm(logscale_factor=3.0)):
    y, ld = _fwd(layer, _init(layer, x), x)
    chex.assert_trees_all_close(jnp.mean(y, (0, 1, 2)), jnp.zeros(3), atol=1e-5)
    chex.assert_trees_all_close(jnp.std(y, (0, 1, 2)), jnp.ones(3), atol=1e-4)
    std = jnp.std(x, (0, 1, 2))
    chex.assert_trees_all_close(ld, -16 * jnp.sum(jnp.log(std)) * jnp.ones(8), rtol=1e-4)


def test_invconv_inits_are_rotations():
  x = _x()
  for layer in (InvConv1x1(), InvConv1x1LU()):
    v = _init(layer, x, seed=3)
    y, ld = _fwd(layer, v, x)
    w = jax.jacfwd(lambda p: _fwd(layer, v, p.reshape(1, 1, 1, 4))[0].reshape(4))(jnp.ones(4))
    chex.assert_trees_all_close(w @ w.T, jnp.eye(4), atol=1e-5)
    chex.assert_trees_all_close(ld, jnp.zeros(2), atol=1e-4)
    # a rotation keeps per-pixel norms
    chex.assert_trees_all_close(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1),
                                rtol=1e-5)


def test_zero_initialised_couplings():
  x = _x()
  add = Coupling(width=8, affine=False)
  y, ld = _fwd(add, _init(add, x), x)
  chex.assert_trees_all_equal(y, x)
  chex.assert_trees_all_equal(ld, jnp.zeros(2))
  aff = Coupling(width=8, affine=True)
  y, ld = _fwd(aff, _init(aff, x), x)
  s = 1.0 / (1.0 + math.exp(-2.0))  # zero network output -> scale sigmoid(0 + 2)
  chex.assert_trees_all_close(y[..., :2], x[..., :2])
  chex.assert_trees_all_close(y[..., 2:], x[..., 2:] * s, rtol=1e-6)
  chex.assert_trees_all_close(ld, jnp.full(2, 4 * 4 * 2 * math.log(s)), rtol=1e-5)


class _TinyConditioner(nn.Module):
  """A 1x1 convolution as a conditioner: h = x_a W + b, [B,H,W,C/2] -> [B,H,W,features]."""
  features: int | None = None

  @nn.compact
  def __call__(self, xa):
    return nn.Dense(self.features, kernel_init=nn.initializers.normal(0.3), name="dense")(xa)


def test_coupling_takes_its_conditioner():
  """The conditioner's parameters live under ``net`` (the default's layout included), its
  ``features`` is filled in (C affine, C/2 additive), and h enters the transform."""
  x = _x()
  default = Coupling(width=8, net_actnorm=True, edge_bias=True)
  given = Coupling(conditioner=CouplingNet(8, net_actnorm=True, edge_bias=True))
  chex.assert_trees_all_equal_shapes(_init(default, x), _init(given, x))
  for affine, features in ((True, 4), (False, 2)):
    layer = Coupling(affine=affine, conditioner=_TinyConditioner())
    v = _init(layer, x)
    chex.assert_shape(v["params"]["net"]["dense"]["kernel"], (2, features))
    y, ld = _fwd(layer, v, x)
    h = x[..., :2] @ v["params"]["net"]["dense"]["kernel"] + v["params"]["net"]["dense"]["bias"]
    if affine:
      s = jax.nn.sigmoid(h[..., :2] + 2.0)
      ref, ref_ld = (x[..., 2:] + h[..., 2:]) * s, jnp.sum(jnp.log(s), axis=(1, 2, 3))
    else:
      ref, ref_ld = x[..., 2:] + h, jnp.zeros(2)
    chex.assert_trees_all_close(y, jnp.concatenate([x[..., :2], ref], -1), rtol=1e-5)
    chex.assert_trees_all_close(ld, ref_ld, rtol=1e-5, atol=1e-6)
  wrong = Coupling(conditioner=_TinyConditioner(features=3))
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    _init(wrong, x)


def test_chain_equals_sequential_application():
  x = _x()
  layers = (ActNorm(), InvConv1x1LU(), Coupling(width=8))
  chain = Chain(layers)
  v = perturb(_init(chain, x), 1, 0.1)
  y, ld = _fwd(chain, v, x)
  h, total = x, 0.0
  for i, layer in enumerate(layers):
    sub = {col: tree[f"layers_{i}"] for col, tree in v.items() if f"layers_{i}" in tree}
    h, l = _fwd(layer, sub, h)
    total = total + l
  chex.assert_trees_all_close(y, h, rtol=1e-6)
  chex.assert_trees_all_close(ld, total, rtol=1e-6)


def test_squeeze_layout_and_split_prior():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  s = squeeze2d(x)
  chex.assert_shape(s, (2, 2, 2, 4))
  # channel 2*dh + dw of output pixel (i, j) is input pixel (2i+dh, 2j+dw)
  for dh in range(2):
    for dw in range(2):
      chex.assert_trees_all_equal(s[:, :, :, 2 * dh + dw], x[:, dh::2, dw::2, 0])
  chex.assert_trees_all_equal(unsqueeze2d(s), x)
  prior = SplitPrior()
  z = _x((2, 2, 2, 8))
  v = perturb(prior.init(jax.random.PRNGKey(0), z, method=prior.split), 1, 0.1)
  z1, z2, lp = prior.apply(v, z, method=prior.split)
  chex.assert_shape([z1, z2], (2, 2, 2, 4))
  mean, logsd = prior.apply(v, z1)
  ref = jnp.sum(-0.5 * jnp.log(2 * jnp.pi) - logsd - 0.5 * ((z2 - mean) / jnp.exp(logsd)) ** 2,
                axis=(1, 2, 3))
  chex.assert_trees_all_close(lp, ref, rtol=1e-5)
  chex.assert_trees_all_close(gaussian_log_prob(z2, 0 * z2, 0 * z2),
                              jnp.sum(-0.5 * jnp.log(2 * jnp.pi) - 0.5 * z2 ** 2, (1, 2, 3)),
                              rtol=1e-6)


def test_bad_input_raises_value_error_naming_the_shape():
  x = _x()
  layer = ActNorm()
  v = _init(layer, x)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    _fwd(layer, v, x[..., :3])
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    _fwd(layer, v, x[0])
  with pytest.raises(ValueError, match=r"\[B,2h,2w,C\]"):
    _fwd(Squeeze(), {}, x[:, :3])
  lu = InvConv1x1LU()
  v = _init(lu, x)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    _inv(lu, v, jnp.zeros((2, 4, 4, 6)))
  cp = Coupling(width=8)
  v = _init(cp, x)
  with pytest.raises(ValueError, match=r"\[B,H,W,4\]"):
    _fwd(cp, v, jnp.zeros((2, 4, 4, 8)))
  with pytest.raises(ValueError, match=r"\[B,H,W,2c\]"):
    _init(cp, jnp.zeros((2, 4, 4, 3)))


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
  y = conv3x3(x, kernel, padding)
  chex.assert_shape(y, (2, 5, 4, 6))
  chex.assert_trees_all_close(y, ref, rtol=1e-5, atol=1e-5)
