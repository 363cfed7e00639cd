"""The whole Glow: round trip and log-det against the brute-force Jacobian of the
flattened map (jacfwd = jacrev); forward mode through the loss; the likelihood
bookkeeping; training, sampling at temperatures 0.7 and 1.0, reconstruction and
interpolation; class conditioning; the compute setting (remat, bfloat16, unroll, the
convolution formulation reaching every 3x3 conv); the stacked steps against a loop of
single steps; bad input; and (slow) training on ``digits`` beating the independent
baseline."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dgmjax
from dgmjax import images
from dgmjax.flows.glow import FlowStep
from dgmjax.flows.squeeze import squeeze2d
from dgmjax.flows.step_spec import StepSpec
from dgmjax.nn.compute import Compute
from dgmjax.nn.stacking import unstack_tree
from tests.flows.glow_util import fast_jit, perturb
from tests.jaxpr_walk import equations


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
  v = perturb(fast_jit(model.init)(jax.random.PRNGKey(0), x), 1)
  y = images.dequantize(jax.random.PRNGKey(2), x, 16)

  def flat(y1):
    zs1, _ = model.encode(v, y1.reshape(1, 4, 4, 2))
    return jnp.concatenate([z.reshape(-1) for z in zs1])

  @fast_jit
  def run(v, y):
    zs, log_det = model.encode(v, y)
    log_q, extras = model.module.apply(v, y, method=model.module.log_density)
    y1 = y[:1].reshape(-1)
    return (zs, log_det, model.decode(v, zs), jax.jacrev(flat)(y1), jax.jacfwd(flat)(y1),
            log_q, extras["log_det"], model.log_prob(v, x, jax.random.PRNGKey(2)))

  zs, log_det, y_back, jac, jac_fwd, log_q, log_det2, lp = run(v, y)
  # forward mode works with the default compute setting, and agrees with reverse mode
  np.testing.assert_allclose(jac_fwd, jac, rtol=1e-4, atol=1e-5)
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
  v = fast_jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {k: a for k, a in v.items() if k != "params"}
  opt = optax.adam(3e-3)

  @fast_jit
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
  return fast_jit(lambda v, r, t: (model.sample_continuous(v, r, 16, t),
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

  @fast_jit
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
  v = fast_jit(model.init)(jax.random.PRNGKey(0), x, y)
  loss_fn = fast_jit(lambda v, x, y: model.loss(v, x, jax.random.PRNGKey(1), y=y))
  loss, aux = loss_fn(v, x, y)
  m = aux["metrics"]
  # zero-initialised classifier: uniform over 10 classes -> log2(10) bits
  np.testing.assert_allclose(m["class_bits"], math.log2(10), rtol=1e-5)
  np.testing.assert_allclose(loss, m["bpd"] + 0.01 * math.log2(10), rtol=1e-5)
  # the label moves the top prior once its weights are non-zero
  v2 = perturb(v, 5)
  a, b = loss_fn(v2, x, y)[0], loss_fn(v2, x, (y + 1) % 10)[0]
  assert not np.allclose(a, b)
  sample = fast_jit(lambda v, y: model.sample(v, jax.random.PRNGKey(2), 3, y=y))
  assert sample(v2, jnp.array([0, 1, 2])).shape == (3, 8, 8, 1)
  with pytest.raises(ValueError, match="labels"):
    model.log_prob(v, x, jax.random.PRNGKey(1))


def _grad(model, v, x):
  return fast_jit(jax.value_and_grad(
      lambda p: model.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]))(v["params"])


def _close(g1, g0):
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         g1, g0)


def test_compute_setting_remat_bfloat16_unroll():
  """compute.remat and compute.unroll change how the steps run, never the loss or its
  gradient (the remat policy reaches the steps); compute.dtype=bfloat16 stays within 5%.
  One parameter tree for all of them."""
  kw = dict(levels=1, steps=2, width=8)
  model = dgmjax.models.create("glow", (4, 4, 1), 8, **kw)
  assert model.compute == Compute()
  x = jnp.asarray(np.random.RandomState(0).randint(0, 8, (8, 4, 4, 1)), jnp.uint8)
  v = perturb(fast_jit(model.init)(jax.random.PRNGKey(0), x), 1)
  l0, g0 = _grad(model, v, x)
  for compute in (dict(remat="full"), Compute(unroll=True)):
    other = dgmjax.models.create("glow", (4, 4, 1), 8, compute=compute, **kw)
    assert isinstance(other.compute, Compute)
    l1, g1 = _grad(other, v, x)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    _close(g1, g0)
  def remats(m):   # jax.checkpoint calls in the traced gradient (the convolutions have own)
    return sum(e.primitive.name in ("checkpoint", "remat2") for e in equations(
        jax.grad(lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]),
        v["params"]))
  remat = dgmjax.models.create("glow", (4, 4, 1), 8, compute=dict(remat="full"), **kw)
  assert remats(remat) > remats(model)
  half = dgmjax.models.create("glow", (4, 4, 1), 8, compute=dict(dtype="bfloat16"), **kw)
  l2 = fast_jit(lambda v: half.loss(v, x, jax.random.PRNGKey(2))[0])(v)
  assert bool(jnp.isfinite(l2)) and abs(float(l2) - float(l0)) < 0.05 * float(l0)


def test_forward_mode_through_the_loss():
  """jax.jvp of the loss (default compute) = <gradient, tangent> for a random tangent."""
  model = dgmjax.models.create("glow", (4, 4, 2), 8, levels=2, steps=2, width=8)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 8, (4, 4, 4, 2)), jnp.uint8)
  v = perturb(fast_jit(model.init)(jax.random.PRNGKey(0), x), 1)
  loss = lambda p: model.loss({**v, "params": p}, x, jax.random.PRNGKey(2))[0]
  t = perturb({"params": jax.tree_util.tree_map(np.zeros_like, v["params"])}, 3, 1.0)["params"]

  @fast_jit
  def run(p, t):
    return jax.jvp(loss, (p,), (t,))[1], jax.grad(loss)(p)
  jvp, g = run(v["params"], t)
  want = sum(np.vdot(np.asarray(a, np.float64), b) for a, b in
             zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(t)))
  np.testing.assert_allclose(jvp, want, rtol=1e-4)


@pytest.mark.parametrize("reversible", [False, True])
def test_conv_setting_reaches_every_3x3_conv(reversible):
  """An explicit compute.conv reaches every 3x3 convolution (coupling networks, split and
  top priors, the reversible check's inverse steps): with "xla" the loss holds exactly one
  XLA convolution per 3x3 conv (2 per level's step body + 1 split prior + 1 top prior,
  and 2 per level's rebuilt step for ``rev_recon_err``), with "matmul" none; both give
  the same loss and gradient (every formulation computes the same convolution:
  tests/nn/test_nn_conv.py; the reversible gradient = autodiff: test_glow_reversible.py)."""
  remat = "reversible" if reversible else "none"
  x = jnp.asarray(np.random.RandomState(0).randint(0, 8, (4, 8, 8, 2)), jnp.uint8)
  make = lambda conv: dgmjax.models.create("glow", (8, 8, 2), 8, levels=2, steps=2, width=8,
                                           compute=dict(conv=conv, remat=remat))
  base = make("xla")
  v = perturb(fast_jit(base.init)(jax.random.PRNGKey(0), x), 1)

  def convs(m):
    return sum(e.primitive.name == "conv_general_dilated" for e in equations(
        lambda v: m.loss(v, x, jax.random.PRNGKey(2))[0], v))
  assert convs(base) == 2 * 2 + 1 + 1 + (2 * 2 if reversible else 0)
  assert convs(make("matmul")) == 0
  if reversible:
    return
  l0, g0 = _grad(base, v, x)
  l1, g1 = _grad(make("matmul"), v, x)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  _close(g1, g0)


def test_stacked_steps_equal_a_loop_of_single_steps():
  """A level's stack (one parameter tree, leading [K] axis, initialised per step from the
  data) computes the same map as K ``FlowStep``s applied in turn on its rows, shuffle
  permutation seed + k included, in both directions."""
  model = dgmjax.models.create("glow", (4, 4, 2), 16, levels=1, steps=3, width=8,
                               permutation="shuffle", learn_top=False)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 16, (8, 4, 4, 2)), jnp.uint8)
  v = fast_jit(model.init)(jax.random.PRNGKey(0), x)
  locs = v["params"]["blocks_0"]["flows"]["actnorm"]["loc"]
  assert locs.shape == (3, 8) and not np.allclose(locs[0], locs[1])
  v = perturb(v, 1)
  spec = StepSpec(8, permutation="shuffle")

  @fast_jit
  def run(v, y):
    zs, log_det = model.encode(v, y)
    h, ld = squeeze2d(y), 0.0
    for k, p in enumerate(unstack_tree(v["params"]["blocks_0"]["flows"])):
      h, l_k = FlowStep(spec, seed=k).apply({"params": p}, h)
      ld = ld + l_k
    return zs[-1], log_det, h, ld, model.decode(v, zs)

  y = model._continuous(x, None)
  z, log_det, z_loop, ld_loop, back = run(v, y)
  np.testing.assert_allclose(z, z_loop, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_det, ld_loop, rtol=1e-5)
  np.testing.assert_allclose(back, y, atol=1e-5)


def test_command_line_reaches_every_hyper_parameter():
  """``--config.model.KEY=...`` reaches Glow's hyper-parameters and compute keys, the
  class-conditional ``num_classes`` (None by default) included: the smoke config then
  builds a class-conditional model (shapes only: nothing is compiled)."""
  import os

  from absl import flags
  from ml_collections import config_flags

  from dgmjax.train import loop
  path = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs",
                      "glow_digits.py")
  argv = ["dgmjax", f"--config={path}:smoke", "--config.model.num_classes=10",
          "--config.model.logscale_factor=3.0", "--config.model.compute.conv=xla",
          "--config.model.compute.remat=full", "--config.model.shuffle_seed=3"]
  fl = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fl, lock_config=True,
                                  sys_argv=argv)
  fl(argv)
  model = dgmjax.models.create("glow", (8, 8, 1), 17, **loop.model_hparams(fl.config))
  assert (model.num_classes, model.logscale_factor, model.shuffle_seed) == (10, 3.0, 3)
  assert model.compute == Compute(conv="xla", remat="full")
  x, y = jnp.zeros((2, 8, 8, 1), jnp.uint8), jnp.zeros((2,), jnp.int32)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, y)
  assert v["params"]["top_prior"]["ycond"]["kernel"].shape[0] == 10


def test_bad_input_is_a_value_error():
  with pytest.raises(ValueError, match="divisible by 2\\*\\*levels"):
    dgmjax.models.create("glow", (6, 6, 1), 17, levels=2, steps=1, width=8)
  with pytest.raises(ValueError, match="coupling"):
    dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=1, width=8, coupling="spline")
  with pytest.raises(ValueError, match="permutation"):
    dgmjax.models.create("glow", (8, 8, 1), 17, levels=2, steps=1, width=8, permutation="x")
  with pytest.raises(ValueError, match="bad hyper-parameters"):
    dgmjax.models.create("glow", (8, 8, 1), 17, level=2)
  for gone in ("scan", "remat", "dtype", "conv_impl"):   # how it runs: compute=...
    with pytest.raises(ValueError, match="bad hyper-parameters"):
      dgmjax.models.create("glow", (8, 8, 1), 17, **{gone: True})
  with pytest.raises(ValueError, match="compute.conv must be one of"):
    dgmjax.models.create("glow", (8, 8, 1), 17, compute=dict(conv="fft"))
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
  v = fast_jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(train[:256]))
  rest = {k: a for k, a in v.items() if k != "params"}
  opt = optax.adam(3e-3)

  @fast_jit
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
