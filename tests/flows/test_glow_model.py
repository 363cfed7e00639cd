"""The whole Glow: round trip and log-det against the brute-force Jacobian of the
flattened map; the likelihood bookkeeping; training, sampling at temperatures 0.7 and
1.0, reconstruction and interpolation; class conditioning; remat/bfloat16; bad input;
and (slow) training on ``digits`` beating the independent baseline."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dgmjax
from dgmjax import images
from tests.jaxpr_walk import equations


def _perturb(variables, rng, scale=0.05):
  leaves, tree = jax.tree_util.tree_flatten(variables["params"])
  keys = jax.random.split(rng, len(leaves))
  leaves = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  return {**variables, "params": jax.tree_util.tree_unflatten(tree, leaves)}


def _digits(seed=0):
  """sklearn's 1797 8x8 digits (levels 0..16) as uint8 [N,8,8,1]: a fixed train/test split."""
  from sklearn.datasets import load_digits
  d = load_digits()
  x = d.images.astype(np.uint8).reshape(-1, 8, 8, 1)
  idx = np.random.RandomState(seed).permutation(len(x))
  return x[idx[:1500]], x[idx[1500:]], d.target[idx[:1500]]


CONFIGS = {
    "affine_lu": dict(coupling="affine", permutation="lu"),
    "additive_shuffle_fixed_top": dict(coupling="additive", permutation="shuffle",
                                       learn_top=False),
    "openai_options": dict(coupling="affine", permutation="conv", net_actnorm=True,
                           logscale_factor=3.0, edge_bias=True),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_and_log_det_vs_jacobian(name):
  model = dgmjax.models.create("glow", (4, 4, 2), 16, levels=2, steps=1, width=8,
                               **CONFIGS[name])
  x = jnp.asarray(np.random.RandomState(0).randint(0, 16, (8, 4, 4, 2)), jnp.uint8)
  v = _perturb(jax.jit(model.init)(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
  y = images.dequantize(jax.random.PRNGKey(2), x, 16)

  def flat(y1):
    zs1, _ = model.encode(v, y1.reshape(1, 4, 4, 2))
    return jnp.concatenate([z.reshape(-1) for z in zs1])

  @jax.jit
  def run(v, y):
    zs, log_det = model.encode(v, y)
    log_q, extras = model.module.apply(v, y, method=model.module.log_density)
    return (zs, log_det, model.decode(v, zs), jax.jacrev(flat)(y[:1].reshape(-1)), log_q,
            extras["log_det"], model.log_prob(v, x, jax.random.PRNGKey(2)))

  zs, log_det, y_back, jac, log_q, log_det2, lp = run(v, y)
  assert [z.shape[1:] for z in zs] == model.latent_shapes() == [(2, 2, 4), (1, 1, 16)]
  np.testing.assert_allclose(y_back, y, atol=1e-5)
  sign, logabs = np.linalg.slogdet(np.asarray(jac, np.float64))
  assert sign != 0
  np.testing.assert_allclose(float(log_det[0]), logabs, rtol=1e-4, atol=1e-4)
  # log_prob = log N(zs; prior) + log_det - D log(num_bins), same dequantisation noise
  np.testing.assert_allclose(log_det2, log_det, rtol=1e-6)
  np.testing.assert_allclose(lp, log_q - 32 * math.log(16), rtol=1e-6)


@pytest.fixture(scope="module")
def trained():
  """A tiny Glow after 100 Adam steps on digits (one compiled step, reused)."""
  train, test, _ = _digits()
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=2, width=16)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {k: a for k, a in v.items() if k != "params"}
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, x, rng):
    (loss, _), g = jax.value_and_grad(
        lambda p: model.loss({"params": p, **rest}, x, rng), has_aux=True)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  params, state = v["params"], opt.init(v["params"])
  rs = np.random.RandomState(0)
  losses = []
  for i in range(100):
    params, state, loss = step(params, state, jnp.asarray(train[rs.randint(0, 1500, 64)]),
                               jax.random.PRNGKey(i))
    losses.append(float(loss))
  return model, {"params": params, **rest}, losses, test


def test_training_lowers_bits_per_dim(trained):
  _, _, losses, _ = trained
  assert np.isfinite(losses).all()
  assert np.mean(losses[-20:]) < np.mean(losses[:5]) - 0.5


@pytest.fixture(scope="module")
def sampler(trained):
  model, _, _, _ = trained
  return jax.jit(lambda v, r, t: (model.sample_continuous(v, r, 16, t),
                                  model.sample(v, r, 16, temperature=t)))


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_samples_finite_after_training(trained, sampler, temperature):
  _, v, _, _ = trained
  xc, s = sampler(v, jax.random.PRNGKey(3), jnp.float32(temperature))
  assert xc.shape == (16, 8, 8, 1) and bool(jnp.all(jnp.isfinite(xc)))
  assert s.dtype == jnp.uint8 and s.shape == (16, 8, 8, 1) and int(s.max()) <= 16
  np.testing.assert_array_equal(s, images.quantize(xc, 17))


def test_reconstruction_and_interpolation(trained):
  model, v, _, test = trained
  x = jnp.asarray(test[:16])
  y = images.dequantize(jax.random.PRNGKey(4), x, 17)

  @jax.jit
  def run(v, x, y):
    return model.decode(v, model.encode(v, y)[0]), model.interpolate(v, x[:2], x[2:4], num=5)

  y_back, path = run(v, x, y)
  assert float(jnp.max(jnp.abs(y_back - y))) < 1e-4
  assert path.shape == (2, 5, 8, 8, 1) and path.dtype == jnp.uint8
  np.testing.assert_array_equal(path[:, 0], x[:2])
  np.testing.assert_array_equal(path[:, -1], x[2:4])


def test_class_conditional_prior_and_class_loss():
  train, _, labels = _digits()
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=1, steps=1, width=8,
                               num_classes=10, class_loss_weight=0.01)
  x, y = jnp.asarray(train[:32]), jnp.asarray(labels[:32])
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x, y)
  loss_fn = jax.jit(lambda v, x, y: model.loss(v, x, jax.random.PRNGKey(1), y=y))
  loss, aux = loss_fn(v, x, y)
  m = aux["metrics"]
  # zero-initialised classifier: uniform over 10 classes -> log2(10) bits
  np.testing.assert_allclose(m["class_bits"], math.log2(10), rtol=1e-5)
  np.testing.assert_allclose(loss, m["bpd"] + 0.01 * math.log2(10), rtol=1e-5)
  # the label moves the top prior once its weights are non-zero
  v2 = _perturb(v, jax.random.PRNGKey(5))
  a, b = loss_fn(v2, x, y)[0], loss_fn(v2, x, (y + 1) % 10)[0]
  assert not np.allclose(a, b)
  sample = jax.jit(lambda v, y: model.sample(v, jax.random.PRNGKey(2), 3, y=y))
  assert sample(v2, jnp.array([0, 1, 2])).shape == (3, 8, 8, 1)
  with pytest.raises(ValueError, match="labels"):
    model.log_prob(v, x, jax.random.PRNGKey(1))


def test_remat_and_bfloat16_match_float32():
  model = dgmjax.models.create("glow", (4, 4, 1), 8, levels=1, steps=2, width=8)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 8, (8, 4, 4, 1)), jnp.uint8)
  v0 = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  v = _perturb(v0, jax.random.PRNGKey(1))
  remat = dgmjax.models.create("glow", (4, 4, 1), 8, levels=1, steps=2, width=8, remat=True)
  half = dgmjax.models.create("glow", (4, 4, 1), 8, levels=1, steps=2, width=8,
                              dtype="bfloat16")
  grad = lambda m: jax.jit(jax.value_and_grad(
      lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]))(v["params"])
  (l0, g0), (l1, g1) = grad(model), grad(remat)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         g1, g0)
  l2 = jax.jit(lambda v: half.loss(v, x, jax.random.PRNGKey(2))[0])(v)
  assert bool(jnp.isfinite(l2)) and abs(float(l2) - float(l0)) < 0.05 * float(l0)


@pytest.mark.parametrize("layout", [{}, {"scan": True}, {"reversible": True}])
def test_conv_impls_give_the_same_loss_and_gradient(layout):
  """Every formulation of the coupling networks' 3x3 convolutions (``dgmjax.nn.conv``)
  gives XLA's convolution's loss and gradient, unrolled, scanned and reversible."""
  kw = dict(levels=2, steps=2, width=8, **layout)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 8, (4, 8, 8, 2)), jnp.uint8)
  base = dgmjax.models.create("glow", (8, 8, 2), 8, conv_impl="xla", **kw)
  v = _perturb(jax.jit(base.init)(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
  grad = lambda m: jax.jit(jax.value_and_grad(
      lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]))(v["params"])
  l0, g0 = grad(base)
  # the option reaches the convolutions: XLA's conv only where asked, the hand-written
  # VJP where "auto" picks it on CPU (a reversible level is a custom_vjp of its own)
  eqs = lambda m: [e.primitive.name for e in equations(
      lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0], v["params"])]
  vjps = lambda names: sum("custom_vjp" in n for n in names)
  base_eqs = eqs(base)
  assert "conv_general_dilated" in base_eqs
  for impl in ("matmul", "auto"):   # auto on CPU: xla_matmul_vjp, and matmul for the zero conv
    model = dgmjax.models.create("glow", (8, 8, 2), 8, conv_impl=impl, **kw)
    used = eqs(model)
    if impl == "matmul":
      assert "conv_general_dilated" not in used and vjps(used) == vjps(base_eqs)
    else:
      assert vjps(used) > vjps(base_eqs)
    l1, g1 = grad(model)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           g1, g0)


def test_scan_equals_unrolled_steps():
  """scan=True (one nn.scan body per level) computes the same flow as the unrolled
  steps once their parameters are stacked (the shuffle permutation included), and its
  data-dependent init is per step."""
  from dgmjax.flows.glow import stack_steps, unstack_steps
  kw = dict(levels=1, steps=2, width=8)
  plain = dgmjax.models.create("glow", (4, 4, 2), 16, **kw)
  scanned = dgmjax.models.create("glow", (4, 4, 2), 16, scan=True, **kw)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 16, (8, 4, 4, 2)), jnp.uint8)
  v = _perturb(jax.jit(plain.init)(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
  vs = stack_steps(v)
  init_s = jax.jit(scanned.init)(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_structure(init_s) == jax.tree_util.tree_structure(vs)
  locs = init_s["params"]["blocks_0"]["flows"]["scan"]["step"]["actnorm"]["loc"]
  assert locs.shape == (2, 8) and not np.allclose(locs[0], locs[1])

  @jax.jit
  def run(v, vs):
    r = jax.random.PRNGKey(2)
    zs, _ = scanned.encode(vs, x)
    return (plain.log_prob(v, x, r), scanned.log_prob(vs, x, r), plain.encode(v, x)[0], zs,
            scanned.decode(vs, zs))

  lp, lps, za, zs, back = run(v, vs)
  np.testing.assert_allclose(lps, lp, rtol=1e-5)
  for a, b in zip(za, zs):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(back, scanned._continuous(x, None), atol=1e-5)
  # fixed permutations are fed to the scan per step: step k keeps seed + k's shuffle
  plain = dgmjax.models.create("glow", (4, 4, 2), 16, permutation="shuffle", **kw)
  scanned = dgmjax.models.create("glow", (4, 4, 2), 16, scan=True, permutation="shuffle", **kw)
  v = _perturb(jax.jit(plain.init)(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1))
  lp = jax.jit(lambda v, vs: (plain.log_prob(v, x, jax.random.PRNGKey(2)),
                              scanned.log_prob(vs, x, jax.random.PRNGKey(2))))(v, stack_steps(v))
  np.testing.assert_allclose(lp[1], lp[0], rtol=1e-5)
  # and back: a scanned model's variables run the unrolled model (both directions convert)
  vs = _perturb(jax.jit(scanned.init)(jax.random.PRNGKey(3), x), jax.random.PRNGKey(4))
  vu = unstack_steps(vs)
  assert jax.tree_util.tree_structure(vu) == jax.tree_util.tree_structure(v)
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack_steps(vu), vs)
  lp = jax.jit(lambda vu, vs: (plain.log_prob(vu, x, jax.random.PRNGKey(2)),
                               scanned.log_prob(vs, x, jax.random.PRNGKey(2))))(vu, vs)
  np.testing.assert_allclose(lp[0], lp[1], rtol=1e-5)


def test_bad_input_is_a_value_error():
  with pytest.raises(ValueError, match="divisible by 2\\*\\*levels"):
    dgmjax.models.create("glow", (6, 6, 1), 17, levels=2, steps=1, width=8)
  with pytest.raises(ValueError, match="coupling"):
    dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=1, width=8, coupling="spline")
  with pytest.raises(ValueError, match="permutation"):
    dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=1, width=8, permutation="x")
  with pytest.raises(ValueError, match="bad hyper-parameters"):
    dgmjax.models.create("glow", (8, 8, 1), 17, level=2)
  model = dgmjax.models.create("glow", (4, 4, 1), 8, levels=2, steps=1, width=8)
  x = jnp.zeros((2, 4, 4, 1), jnp.uint8)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)  # checks happen before compute
  with pytest.raises(ValueError, match=r"\[B,4,4,1\]"):
    model.log_prob(v, jnp.zeros((2, 4, 4, 3), jnp.uint8), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"\[B,4,4,1\]"):
    model.encode(v, jnp.zeros((4, 4, 1), jnp.float32))
  with pytest.raises(ValueError, match=r"\[B,4,4,1\]"):
    model.encode(v, jnp.zeros((2, 4, 4, 2), jnp.float32))
  with pytest.raises(ValueError, match=r"\[B,2,2,2\]"):
    model.decode(v, [jnp.zeros((2, 2, 2, 3)), jnp.zeros((2, 1, 1, 8))])


@pytest.mark.slow
def test_digits_beats_independent_baseline():
  """~1500 Adam steps on digits; the held-out dequantisation bound must beat the
  independent model's held-out bits/dim (its closed-form fit: per-pixel frequencies)."""
  train, test, _ = _digits()
  counts = np.stack([(train == k).sum(0) for k in range(17)], -1) + 1e-3
  probs = counts / counts.sum(-1, keepdims=True)
  indep = -np.log(np.take_along_axis(probs[None], test[..., None].astype(int), -1)).sum(
      (1, 2, 3, 4)).mean() / (64 * math.log(2))
  model = dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=4, width=32)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {k: a for k, a in v.items() if k != "params"}
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, x, rng):
    (loss, _), g = jax.value_and_grad(
        lambda p: model.loss({"params": p, **rest}, x, rng), has_aux=True)(params)
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  params, state = v["params"], opt.init(v["params"])
  rs = np.random.RandomState(0)
  for i in range(1500):
    params, state, _ = step(params, state, jnp.asarray(train[rs.randint(0, 1500, 64)]),
                            jax.random.PRNGKey(i))
  lp = model.log_prob({"params": params, **rest}, jnp.asarray(test), jax.random.PRNGKey(9))
  glow = float(jnp.mean(images.bits_per_dim(lp, (8, 8, 1))))
  assert glow < indep, (glow, indep)
