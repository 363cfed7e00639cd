"""The NVAE model protocol on a tiny one-scale model with flows (shared compiled steps);
the multi-scale paths are covered by the shape/parameter-count tests and the slow run."""

from __future__ import annotations

import importlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from dgmjax import models
from dgmjax.nvae.cells import count_params
from dgmjax.nvae.hierarchy import NVAENet

TINY = dict(channels=4, scales=1, groups_per_scale=2, use_se=False, latents_per_group=2,
            cells_per_group=1, preprocess_blocks=1, preprocess_cells=1, postprocess_blocks=1,
            postprocess_cells=1, num_flows=1, weight_decay_norm=1e-2,
            weight_decay_norm_anneal=True, weight_decay_norm_init=1.0, kl_warmup_steps=50,
            kl_const_steps=1)
B = 16
D = 64 * math.log(2)
REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata",
                   "state_dicts")


def _digits():
  d = load_digits().images.astype(np.uint8)[..., None]
  d = d[np.random.RandomState(0).permutation(len(d))]
  return d[:1500], d[1500:]


def _adamax():
  return optax.chain(optax.add_decayed_weights(3e-4 / D), optax.scale_by_adamax(eps=1e-3 / D),
                     optax.scale(-1e-2))


@pytest.fixture(scope="module")
def tiny():
  model = models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **TINY)
  train, test = _digits()
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(train[:B]))
  tx = _adamax()

  @jax.jit
  def step(v, opt, x, rng, i):
    (loss, aux), g = jax.value_and_grad(
        lambda p: model.loss({**v, "params": p}, x, rng, train=True, step=i),
        has_aux=True)(v["params"])
    up, opt = tx.update(g, opt, v["params"])
    return {**v, "params": optax.apply_updates(v["params"], up), **aux["state"]}, opt, loss, aux, g

  iw_terms = jax.jit(model.log_iw_terms)
  return dict(model=model, train=train, test=test, v=variables, tx=tx, step=step,
              iw_terms=iw_terms)


def test_variables_layout(tiny):
  """One layout: each scale's repeated groups stacked on a leading axis, so the number of
  parameter arrays does not grow with the number of groups."""
  v = tiny["v"]
  assert set(v) == {"params", "batch_stats", "spectral"}
  p = v["params"]
  assert set(p) == {"prior_ftr0", "stem", "pre_process_0", "enc_groups_0", "enc0",
                    "enc_sampler_0", "nf_cells_0", "dec_top", "dec_groups_0",
                    "post_process_0", "image_conditional"}
  assert set(p["dec_groups_0"]) == {"cells_0", "dec_sampler", "enc_combiner", "enc_sampler",
                                    "flows_0", "dec_combiner"}
  assert p["enc_groups_0"]["cells_0"]["ops_0"]["conv_0"]["kernel"].shape[0] == 2
  assert p["dec_groups_0"]["dec_sampler"]["kernel"].shape[0] == 1     # group 0 is apart
  assert set(p["stem"]) == {"kernel", "bias", "log_weight_norm"}
  for group in v["spectral"].values():
    np.testing.assert_allclose(np.linalg.norm(group["u"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(group["v"], axis=1), 1.0, rtol=1e-5)
  assert tiny["model"].groups == (2,)
  x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.uint8)
  count = lambda g: len(jax.tree_util.tree_leaves(jax.eval_shape(models.create(
      "nvae", image_shape=(8, 8, 1), num_bins=17, **{**TINY, "groups_per_scale": g}).init,
      jax.random.PRNGKey(0), x)))
  assert count(2) == count(6)


@pytest.mark.slow
def test_train_step_grads_finite_and_state_updates(tiny):
  model, v = tiny["model"], tiny["v"]
  x = jnp.asarray(tiny["train"][:B])
  opt = tiny["tx"].init(v["params"])
  v2, _, loss, aux, g = tiny["step"](v, opt, x, jax.random.PRNGKey(1), 0)
  assert np.isfinite(float(loss))
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(g))
  m = aux["metrics"]
  np.testing.assert_allclose(m["bpd"], m["nelbo_nats"] / D, rtol=1e-5)
  np.testing.assert_allclose(m["kl_coeff"], 1e-4, rtol=1e-5)    # warm-up floor at step 0
  np.testing.assert_allclose(loss, m["objective_nats"] / D, rtol=1e-5)
  # Training mode moves the BN statistics and the power-iteration vectors ...
  old = jax.tree_util.tree_leaves(v["batch_stats"])
  new = jax.tree_util.tree_leaves(aux["state"]["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(v["spectral"]),
                                                   jax.tree_util.tree_leaves(v2["spectral"])))
  # ... evaluation mode changes nothing and returns no state.
  loss_eval, aux_eval = model.loss(v, x, jax.random.PRNGKey(1), train=False)
  assert aux_eval["state"] == {} and np.isfinite(float(loss_eval))


@pytest.mark.slow
def test_forward_mode_through_the_training_objective(tiny):
  """jax.jvp of the training objective (default kernels: the custom_jvp convolutions) equals
  the inner product of the train step's gradient with the tangent."""
  model, v = tiny["model"], tiny["v"]
  x, rng = jnp.asarray(tiny["train"][:B]), jax.random.PRNGKey(1)
  g = tiny["step"](v, tiny["tx"].init(v["params"]), x, rng, 3)[-1]
  rs = np.random.RandomState(0)
  t = jax.tree_util.tree_map(lambda a: rs.standard_normal(a.shape).astype(np.float32), g)
  _, got = jax.jit(lambda v, t: jax.jvp(
      lambda p: model.loss({**v, "params": p}, x, rng, train=True, step=3)[0],
      (v["params"],), (t,)))(v, t)
  want = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                   jax.tree_util.tree_leaves(t)))
  np.testing.assert_allclose(float(got), want, rtol=1e-4)


@pytest.mark.slow
def test_importance_weighted_bound(tiny):
  model, v = tiny["model"], tiny["v"]
  x = jnp.asarray(tiny["test"][:8])
  c = 16
  xs = jnp.tile(x, (c, 1, 1, 1))
  rng = jax.random.PRNGKey(3)
  chunks = [tiny["iw_terms"](v, xs, jax.random.fold_in(rng, i)) for i in range(4)]
  log_w = np.concatenate([np.asarray(lw).reshape(c, 8) for lw, _ in chunks])     # [64, 8]
  elbo = np.concatenate([np.asarray(e).reshape(c, 8) for _, e in chunks])
  # The analytic-KL ELBO and the one-sample log-weight agree in expectation (flows: exactly).
  np.testing.assert_allclose(elbo.mean(), log_w.mean(), rtol=1e-5)
  bounds = []
  for k in (1, 2, 4, 8, 16, 64):
    lw = log_w.reshape(64 // k, k, 8)
    bounds.append(float(np.mean(jax.nn.logsumexp(lw, axis=1) - np.log(k))))
  assert all(b2 >= b1 - 1e-4 for b1, b2 in zip(bounds, bounds[1:])), bounds
  assert bounds[-1] > bounds[0]
  # model.log_prob with K = 20 in chunks of 16 (the last chunk masked) is the same bound.
  lp = jax.jit(lambda v, x, r: model.log_prob(v, x, r, num_samples=20, chunk_size=c))(v, x, rng)
  expect = jax.nn.logsumexp(np.concatenate([log_w[:16], log_w[16:20]]), axis=0) - np.log(20)
  np.testing.assert_allclose(lp, expect, rtol=1e-5)


def test_spectral_vectors_roundtrip_through_orbax(tiny, tmp_path):
  import orbax.checkpoint as ocp
  v = jax.tree_util.tree_map(np.asarray, tiny["v"])
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.join(tmp_path, "v"), v)
  ckpt.wait_until_finished()
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, v)
  back = ckpt.restore(os.path.join(tmp_path, "v"), abstract)
  assert set(back["spectral"]) == set(v["spectral"])
  for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sampling_and_bn_readjustment(tiny):
  model, v = tiny["model"], tiny["v"]
  s = jax.jit(lambda v, r: model.sample(v, r, 6, temperature=0.7))(v, jax.random.PRNGKey(4))
  assert s.shape == (6, 8, 8, 1) and s.dtype == jnp.uint8 and int(s.max()) < 17
  stats = model.readjust_batch_stats(v, jax.random.PRNGKey(5), num=4, temperature=0.7, iters=3)
  assert jax.tree_util.tree_structure(stats) == jax.tree_util.tree_structure(v["batch_stats"])
  changed = {k: not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(stats[k]),
                                                          jax.tree_util.tree_leaves(v["batch_stats"][k])))
             for k in stats}
  assert not any(changed[k] for k in changed if k.startswith(("pre_process", "enc_groups")))
  assert any(changed[k] for k in changed if k.startswith(("dec_groups", "post_process")))


@pytest.mark.slow
def test_short_training_improves_the_elbo(tiny):
  """Short variant of the digits run (slow: 47 s on the 2-core machine, and the fast suite
  tests the loss's gradient and one step elsewhere): 40 steps lower the objective."""
  v, opt, step = tiny["v"], tiny["tx"].init(tiny["v"]["params"]), tiny["step"]
  rs = np.random.RandomState(1)
  losses = []
  for i in range(40):
    x = jnp.asarray(tiny["train"][rs.randint(0, 1500, B)])
    v, opt, _, aux, _ = step(v, opt, x, jax.random.PRNGKey(100 + i), 1000)   # beta = 1
    losses.append(float(aux["metrics"]["bpd"]))
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2, losses


@pytest.mark.slow
def test_digits_training_beats_independent_baseline():
  train, test = _digits()
  counts = np.stack([(train == k).sum(0) for k in range(17)], -1) + 1.0
  logp = np.log(counts / counts.sum(-1, keepdims=True))
  independent = -np.take_along_axis(logp[None], test[..., None].astype(int), -1).sum(
      (1, 2, 3, 4)).mean() / D
  cfg = dict(TINY, channels=8, scales=2, groups_per_scale=2, ada_groups=True, use_se=True,
             latents_per_group=4, kl_warmup_steps=200)
  model = models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **cfg)
  v = model.init(jax.random.PRNGKey(0), jnp.asarray(train[:32]))
  tx = _adamax()
  opt = tx.init(v["params"])

  @jax.jit
  def step(v, opt, x, rng, i):
    (_, aux), g = jax.value_and_grad(
        lambda p: model.loss({**v, "params": p}, x, rng, step=i), has_aux=True)(v["params"])
    up, opt = tx.update(g, opt, v["params"])
    return {**v, "params": optax.apply_updates(v["params"], up), **aux["state"]}, opt

  rs = np.random.RandomState(0)
  for i in range(600):
    v, opt = step(v, opt, jnp.asarray(train[rs.randint(0, 1500, 32)]), jax.random.PRNGKey(i), i)
  elbo = model.log_prob(v, jnp.asarray(test), jax.random.PRNGKey(7))
  bpd = -float(jnp.mean(elbo)) / D
  assert bpd < independent - 0.2, (bpd, independent)


def _reference_counts(name):
  with open(os.path.join(REF, name + ".state_dict.json")) as f:
    sd = json.load(f)
  params = stats = 0
  for k, shape in sd.items():
    n = int(np.prod(shape)) if shape else 1
    last = k.rsplit(".", 1)[-1]
    if last in ("running_mean", "running_var"):
      stats += n
    elif last not in ("num_batches_tracked", "weight_normalized"):
      params += n
  return params, stats


@pytest.mark.parametrize("name, shape, bins, hp", [
    ("nvae_mnist_tiny", (32, 32, 1), 2, dict(
        channels=8, scales=2, groups_per_scale=2, ada_groups=True, latents_per_group=4,
        cells_per_group=1, preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1,
        postprocess_cells=2, num_flows=0, crop_to=(28, 28))),
    ("nvae_cifar_tiny", (32, 32, 3), 256, dict(
        channels=8, scales=1, groups_per_scale=2, latents_per_group=4, cells_per_group=1,
        preprocess_blocks=1, preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2,
        num_flows=1)),
])
def test_parameter_counts_match_official_layout(name, shape, bins, hp):
  model = models.create("nvae", image_shape=shape, num_bins=bins, **hp)
  v = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                     jax.ShapeDtypeStruct((2,) + shape, jnp.uint8))
  params, stats = _reference_counts(name)
  assert count_params(v["params"]) == params
  assert count_params(v["batch_stats"]) == stats


@pytest.mark.parametrize("config", ["nvae_binarized_mnist", "nvae_cifar10", "nvae_celeba"])
def test_paper_config_shapes(config):
  c = importlib.import_module(f"experiments.configs.{config}").get_config()
  shape = {"nvae_binarized_mnist": (32, 32, 1), "nvae_cifar10": (32, 32, 3),
           "nvae_celeba": (64, 64, 3)}[config]
  bins = 2 if config == "nvae_binarized_mnist" else 256
  hp = {k: v for k, v in c.model.items() if k != "name"}
  model = models.create("nvae", image_shape=shape, num_bins=bins, **hp)
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.uint8)
  (logits, terms), v = jax.eval_shape(
      lambda x: model.net.init_with_output(
          {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, model._inputs(x)), x)
  assert logits.shape == (2,) + shape[:2] + (model.out_channels,)
  assert terms["kl"].shape == (sum(model.groups), 2)
  if config == "nvae_binarized_mnist":
    assert model.out_channels == 1 and model.num_dims == 784
    assert abs(count_params(v["params"]) / 1e6 - 33.4) < 0.05     # README: 33.4M
  elif config == "nvae_cifar10":
    assert model.out_channels == 100
    assert abs(count_params(v["params"]) / 1e6 - 130.9) < 0.05   # README: 130.9M


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="divisible"):
    models.create("nvae", image_shape=(10, 10, 1), num_bins=17, scales=2)
  with pytest.raises(ValueError, match="postprocess_blocks"):
    models.create("nvae", image_shape=(8, 8, 1), num_bins=17, postprocess_blocks=2)
  with pytest.raises(ValueError, match="Bernoulli"):
    models.create("nvae", image_shape=(8, 8, 1), num_bins=17, decoder="bernoulli")
  with pytest.raises(ValueError, match="crop_to"):
    models.create("nvae", image_shape=(8, 8, 1), num_bins=2, crop_to=(5, 8))
  with pytest.raises(ValueError, match="bad hyper-parameters"):
    models.create("nvae", image_shape=(8, 8, 1), num_bins=17, chanels=4)
  model = models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **TINY)
  with pytest.raises(ValueError, match="values must lie"):
    model.init(jax.random.PRNGKey(0), jnp.full((2, 8, 8, 1), 17, jnp.uint8))
  with pytest.raises(ValueError, match="shape"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3), jnp.uint8))


def test_binarized_mnist_config_is_dynamic_by_default():
  """The paper's dynamic binarisation: 256-level MNIST resampled per batch; the fixed tfds
  binarisation (2 levels, where ``binarize`` would be a no-op) is the named variant."""
  from dgmjax.data import datasets
  mod = importlib.import_module("experiments.configs.nvae_binarized_mnist")
  for variant in (None, "smoke"):
    c = mod.get_config(variant)
    assert c.data.name == "mnist" and c.data.binarize
    assert datasets._TFDS[c.data.name].num_bins == 256   # so Bernoulli(x/255) is random
  for variant in ("fixed", "fixed_smoke"):
    c = mod.get_config(variant)
    assert c.data.name == "binarized_mnist" and not c.data.binarize
  assert mod.get_config("fixed_smoke").model.channels == 4
  with pytest.raises(ValueError, match="unknown variant"):
    mod.get_config("dynamic")


@pytest.mark.slow
def test_iw_samples_bound(tiny):
  """iw_samples=1 is the ELBO; the chunked bound rises on average with K."""
  model, v = tiny["model"], tiny["v"]
  x = jnp.asarray(tiny["test"][:8])
  rng = jax.random.PRNGKey(7)
  lp = jax.jit(lambda v, x, r, k: model.log_prob(v, x, r, iw_samples=k), static_argnums=3)
  np.testing.assert_allclose(lp(v, x, rng, 1), tiny["iw_terms"](v, x, rng)[1], rtol=1e-6)
  means = [float(np.mean([np.mean(lp(v, x, jax.random.fold_in(rng, s), k)) for s in range(3)]))
           for k in (1, 4, 32)]
  assert means[0] < means[1] < means[2], means
  with pytest.raises(ValueError, match="iw_samples"):
    model.log_prob(v, x, rng, iw_samples=0)
  with pytest.raises(ValueError, match="num_samples must be"):     # the name the caller used
    model.log_prob(v, x, rng, num_samples=0)
  with pytest.raises(ValueError, match="not both"):
    model.log_prob(v, x, rng, num_samples=4, iw_samples=8)


@pytest.mark.slow
def test_readjusted_bn_is_named_state_used_by_sample(tiny):
  model, v = tiny["model"], tiny["v"]
  with pytest.raises(ValueError, match="readjusted_batch_stats"):
    model.sample(v, jax.random.PRNGKey(0), 2, readjusted_bn=True)
  state = model.readjust_bn(v, jax.random.PRNGKey(5), num=4, temperature=0.7, iters=2)
  assert set(state) == {"readjusted_batch_stats"}
  assert (jax.tree_util.tree_structure(state["readjusted_batch_stats"])
          == jax.tree_util.tree_structure(v["batch_stats"]))
  v2 = {**v, **state}
  key = jax.random.PRNGKey(9)
  plain = model.sample(v2, key, 4, temperature=0.7)
  np.testing.assert_array_equal(plain, model.sample(v, key, 4, temperature=0.7))
  # the re-estimated statistics reach the decoder: its output logits change (the sampled
  # uint8 pixels of this untrained model may or may not: they are too coarse to assert on)
  logits = lambda bs: model.net.apply({"params": v["params"], "batch_stats": bs}, 4, 0.7, False,
                                      method=NVAENet.sample, rngs={"sample": key})
  assert float(jnp.max(jnp.abs(logits(state["readjusted_batch_stats"])
                               - logits(v["batch_stats"])))) > 1e-3
  # and sample(readjusted_bn=True) decodes with variables["readjusted_batch_stats"]
  shifted = jax.tree_util.tree_map(lambda a: a + 3.0, state["readjusted_batch_stats"])
  readj = model.sample({**v, "readjusted_batch_stats": shifted}, key, 4, temperature=0.7,
                       readjusted_bn=True)
  assert readj.shape == plain.shape and not np.array_equal(readj, plain)
  # a non-finite statistic is an error naming it, never a silent NaN image (NVlabs/NVAE#36)
  bad = jax.tree_util.tree_map(lambda a: a, v)
  params = jax.tree_util.tree_map(lambda a: a, v["params"])
  first = sorted(k for k in params if k.startswith("dec_groups"))[0]
  params[first] = jax.tree_util.tree_map(lambda a: a * jnp.nan, params[first])
  bad["params"] = params
  with pytest.raises(ValueError, match="non-finite statistic"):
    model.readjust_bn(bad, jax.random.PRNGKey(5), num=4, iters=1)


def test_bad_sampling_input_and_hparams(tiny):
  model, v = tiny["model"], tiny["v"]
  with pytest.raises(ValueError, match="num"):
    model.sample(v, jax.random.PRNGKey(0), 0)
  for t in (0.0, -0.5, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="temperature"):
      model.sample(v, jax.random.PRNGKey(0), 2, temperature=t)
  for key in ("kl_const_coeff", "weight_decay_norm", "weight_decay_norm_init"):
    for bad in (float("nan"), float("inf")):
      with pytest.raises(ValueError, match=key):
        models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **{**TINY, key: bad})
  with pytest.raises(ValueError, match="dmol_edge"):
    models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **{**TINY, "dmol_edge": "x"})
