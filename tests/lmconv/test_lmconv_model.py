"""LMConvModel: the autoregressive property in any order (gradients and perturbations),
normalisation over tiny image spaces, exact cached sampling, completion, validation."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax import images
from dgmjax.lmconv import orders
from dgmjax.lmconv.network import FullEngine
from dgmjax.lmconv.sampling import generate


def _model(shape, num_bins, **kw):
  kw = dict(dict(filters=8, resnets=1, dropout=0.0, mixtures=3), **kw)
  m = dgmjax.models.create("lmconv", image_shape=shape, num_bins=num_bins, **kw)
  x = jnp.zeros((1,) + m.image_shape, jnp.uint8)
  return m, m.init(jax.random.PRNGKey(0), x)


def _forward_fn(model, variables):
  """(x uint8, masks) -> head outputs, compiled once; masks are arguments, not constants."""
  return jax.jit(lambda x, masks: model._forward(variables["params"], x, masks))


def _dependence_fn(model, variables):
  """order -> dep[p, q] = True iff the head output at flat pixel p has a nonzero
  derivative with respect to (any channel of) input pixel q. Compiled once per model."""
  h, w, c = model.image_shape
  xc = jax.random.uniform(jax.random.PRNGKey(5), (1, h, w, c), minval=-1, maxval=1)

  @jax.jit
  def dep(masks):
    f = lambda xc: model.network.apply(variables, xc, FullEngine(masks))[0]
    jac = jax.jacfwd(f)(xc)                                # [H,W,n, 1,H,W,C]
    return jnp.abs(jac).sum(axis=(2, 3, 6)) > 0
  return lambda order: np.asarray(dep(model._masks_for(order))).reshape(h * w, h * w)


@pytest.fixture(scope="module")
def rgb6():
  model, variables = _model((6, 6, 3), 8, mask_weight=True)
  return model, variables, _dependence_fn(model, variables)


@pytest.fixture(scope="module")
def grey8():
  model, variables = _model((8, 8, 1), 17, normalization="weight_norm",
                            orders=("s_curve:all",))
  return model, variables, _dependence_fn(model, variables)


def _check_autoregressive(dep, order, w):
  rank = orders.ranks(np.asarray(order))
  later_or_self = rank[None, :] >= rank[:, None]           # [p, q]: q at/after p
  assert not np.any(dep & later_or_self), "an output depends on a pixel at/after it"
  for p in range(dep.shape[0]):
    r, c = divmod(p, w)
    for dr, dc in itertools.product((-1, 0, 1), repeat=2):
      q = (r + dr) * w + (c + dc)
      if (dr, dc) != (0, 0) and 0 <= r + dr < dep.shape[0] // w and 0 <= c + dc < w:
        if rank[q] < rank[p]:
          assert dep[p, q], "an earlier neighbour is ignored"
  # in these orders most pixels see more than their direct neighbours (deep network)
  assert (dep.sum(1) > 8).sum() > dep.shape[0] // 3


@pytest.mark.parametrize("order", ["raster", "s_curve", "s_curve:6", "random"])
def test_autoregressive_6x6_rgb(rgb6, order):
  model, variables, dependence = rgb6
  o = (np.random.default_rng(3).permutation(36) if order == "random"
       else orders.parse(order, 6, 6)[0])
  _check_autoregressive(dependence(o), o, 6)


@pytest.mark.parametrize("order", ["raster", "hilbert", "hilbert:7", "gilbert:2", "random"])
def test_autoregressive_8x8_grey(grey8, order):
  model, variables, dependence = grey8
  o = (np.random.default_rng(4).permutation(64) if order == "random"
       else orders.parse(order, 8, 8)[0])
  _check_autoregressive(dependence(o), o, 8)


def test_perturbing_later_pixels_leaves_conditionals_unchanged(rgb6):
  model, variables, _ = rgb6
  order = np.random.default_rng(6).permutation(36).astype(np.int32)
  rank = orders.ranks(order).reshape(6, 6)
  key = jax.random.PRNGKey(7)
  x = jax.random.randint(key, (1, 6, 6, 3), 0, 8).astype(jnp.uint8)
  lp = jax.jit(lambda x, o: model.conditional_log_prob(variables, x, o))
  base = np.asarray(lp(x, jnp.asarray(order)))[0]
  for t in (0, 10, 20, 35):
    noise = jax.random.randint(jax.random.fold_in(key, t), x.shape, 0, 8).astype(jnp.uint8)
    changed = jnp.where(jnp.asarray(rank >= t)[None, :, :, None], noise, x)
    after = np.asarray(lp(changed, jnp.asarray(order)))[0]
    np.testing.assert_array_equal(after[rank < t], base[rank < t])
    if t < 35:
      assert np.any(after[rank > t] != base[rank > t])


def _all_images(shape, num_bins):
  d = int(np.prod(shape))
  grid = np.array(list(itertools.product(range(num_bins), repeat=d)), np.uint8)
  return grid.reshape((-1,) + shape)


@pytest.mark.parametrize("shape,num_bins,kw", [
    ((2, 2, 1), 4, dict(orders=("raster", "s_curve:3"))),       # greyscale dmol, ensemble
    ((2, 2, 3), 2, dict()),                                     # RGB-coupled dmol
    ((2, 2, 1), 2, dict()),                                     # official 2-way softmax
    pytest.param((2, 2, 1), 2, dict(head="bernoulli", orders=("gilbert:all",)),
                 marks=pytest.mark.slow),
    pytest.param((2, 2, 1), 3, dict(head="softmax"), marks=pytest.mark.slow),
])
def test_probabilities_sum_to_one(shape, num_bins, kw):
  model, variables = _model(shape, num_bins, **dict(dict(filters=4), **kw))
  x = jnp.asarray(_all_images(shape, num_bins))
  total = jax.nn.logsumexp(jax.jit(lambda x: model.log_prob(variables, x))(x))
  np.testing.assert_allclose(float(total), 0.0, atol=2e-5)


def test_cached_sampling_is_exact_and_matches_naive(rgb6):
  model, variables, _ = rgb6
  order = jnp.asarray(np.random.default_rng(8).permutation(36).astype(np.int32))
  canvas = jnp.zeros((3, 6, 6, 3), jnp.uint8)
  run = jax.jit(lambda rng, method: generate(model, variables["params"], rng, canvas, order,
                                             jnp.zeros(36, bool), method=method,
                                             return_outputs=True), static_argnums=1)
  fast, out_fast = run(jax.random.PRNGKey(1), "cached")
  slow, out_slow = run(jax.random.PRNGKey(1), "naive")
  assert fast.dtype == jnp.uint8 and fast.shape == (3, 6, 6, 3) and int(fast.max()) < 8
  # the outputs the cached sampler used are those of a full pass over its own sample
  forward = _forward_fn(model, variables)
  masks = model._masks_for(order)
  np.testing.assert_allclose(out_fast, forward(fast, masks), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out_slow, forward(slow, masks), rtol=1e-4, atol=1e-4)
  assert float(jnp.mean(fast == slow)) > 0.95            # same keys: same draws up to rounding


def test_sample_protocol_and_temperatures(grey8):
  model, variables, _ = grey8
  s = jax.jit(lambda rng: model.sample(variables, rng, 2))(jax.random.PRNGKey(0))
  assert s.shape == (2, 8, 8, 1) and s.dtype == jnp.uint8 and int(s.max()) < 17
  cold = jax.jit(lambda rng: model.sample(variables, rng, 2, order="hilbert",
                                          temperature=1e-6))
  np.testing.assert_array_equal(cold(jax.random.PRNGKey(1)), cold(jax.random.PRNGKey(2)))
  for bad in (0.0, -1.0, float("nan"), float("inf")):
    for key in ("temperature", "mixture_temperature", "logistic_temperature"):
      with pytest.raises(ValueError, match=key):
        model.sample(variables, jax.random.PRNGKey(0), 2, **{key: bad})
  with pytest.raises(ValueError, match="positive int"):
    model.sample(variables, jax.random.PRNGKey(0), 0)


def test_dmol_temperatures_change_samples_as_the_official_sampler():
  """``temperature`` changes DMOL samples; ``mixture_temperature`` divides the component
  parameters after the mixture logits (ajayjain/lmconv), ``logistic_temperature`` the scale."""
  from dgmjax.lmconv import heads
  m, c, k = 3, 3, 256
  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(4000, 10 * m)), jnp.float32)
  out = out.at[:, m:].multiply(0.3)
  draw = jax.jit(lambda key, out, tm, tl, t: heads.sample("dmol", key, out, c, k, m, tm, tl, t))
  key = jax.random.PRNGKey(3)
  base = np.asarray(draw(key, out, 1.0, 1.0, 1.0))
  assert not np.array_equal(base, np.asarray(draw(key, out, 1.0, 1.0, 0.7)))
  # one pixel distribution drawn 4000 times: a lower temperature concentrates the draws
  same = jnp.broadcast_to(out[:1], out.shape)
  spread = lambda t: float(np.asarray(draw(key, same, 1.0, 1.0, t), np.float64).std(0).mean())
  assert spread(0.3) < spread(1.0) < spread(1.5)
  # mixture_temperature T_m: the same draw as T_m = 1 on parameters divided by T_m
  scaled = jnp.concatenate([out[:, :m], out[:, m:] / 0.5], axis=-1)
  np.testing.assert_array_equal(draw(key, out, 0.5, 1.0, 1.0), draw(key, scaled, 1.0, 1.0, 1.0))
  # logistic_temperature and temperature multiply the scale alike (logits untouched by T_l)
  np.testing.assert_array_equal(draw(key, out, 1.0, 0.5, 1.0),
                                draw(key, out.at[:, :m].multiply(0.5), 1.0, 1.0, 0.5))


@pytest.mark.slow
@pytest.mark.parametrize("per_example", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_completion_keeps_observed_pixels(rgb6, per_example):
  model, variables, _ = rgb6
  key = jax.random.PRNGKey(11)
  x = jax.random.randint(key, (2, 6, 6, 3), 0, 8).astype(jnp.uint8)
  shape = (2, 6, 6) if per_example else (6, 6)
  observed = jax.random.uniform(jax.random.fold_in(key, 1), shape) < 0.5
  done = jax.jit(lambda rng, x, o: model.complete(variables, rng, x, o))(key, x, observed)
  obs = np.broadcast_to(np.asarray(observed), (2, 6, 6))
  np.testing.assert_array_equal(np.asarray(done)[obs], np.asarray(x)[obs])
  assert not np.array_equal(np.asarray(done)[~obs], np.asarray(x)[~obs])
  # the conditional NLL of the hidden region is the completion order's hidden conditionals
  hidden = jax.jit(lambda x, o: model.hidden_log_prob(variables, x, o))
  cond = jax.jit(lambda x, o: model.conditional_log_prob(variables, x, o))
  hid = hidden(x, observed)
  assert hid.shape == (2,) and bool(jnp.all(hid < 0))
  if not per_example:
    comp = model.completion_order(observed)
    np.testing.assert_allclose(hid, jnp.sum(jnp.where(observed, 0.0, cond(x, comp)),
                                            axis=(1, 2)), rtol=1e-5)
    none = jnp.zeros((6, 6), bool)
    np.testing.assert_allclose(hidden(x, none), cond(x, jnp.asarray(model.order_array[0]))
                               .sum(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(hidden(x, ~none), 0.0)


def test_loss_and_validation(rgb6):
  model, variables, _ = rgb6
  x = jnp.zeros((2, 6, 6, 3), jnp.uint8)
  bpd, aux = jax.jit(lambda v, x, r: model.loss(v, x, r, train=True, step=0))(
      variables, x, jax.random.PRNGKey(0))
  logp = jax.jit(lambda v, x: model.log_prob(v, x))(variables, x)
  np.testing.assert_allclose(bpd, images.bits_per_dim(logp, model.image_shape).mean(),
                             rtol=1e-5)
  assert set(aux) == {"metrics", "state"} and "bpd" in aux["metrics"]
  for bad in [dict(normalization="batch"), dict(filters=0), dict(orders="raster"),
              dict(orders=("spiral",)), dict(dropout=1.0), dict(head="gauss"),
              dict(kernel_size=4), dict(orders=([0, 1, 1, 2],)), dict(compute=dict(dtype="int8")),
              dict(compute=dict(conv="xla")), dict(compute=dict(depthwise="grouped")),
              dict(dtype="float32"), dict(scan=True), dict(remat=True), dict(bogus=1)]:
    with pytest.raises(ValueError):
      dgmjax.models.create("lmconv", image_shape=(2, 2, 1), num_bins=4, **bad)
  with pytest.raises(ValueError, match="values must lie"):
    model.loss(variables, x + 9, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="observed_mask"):
    model.complete(variables, jax.random.PRNGKey(0), x, jnp.ones((5, 6), bool))
  with pytest.raises(ValueError, match="permutation"):
    model.conditional_log_prob(variables, x, np.zeros(36, np.int32))
  with pytest.raises(ValueError, match="order index"):
    model.conditional_log_prob(variables, x, 3)


@pytest.mark.slow
def test_remat_gives_the_same_gradients():
  """In float64 (jax_enable_x64, float64 compute and parameters): in float32 the
  recomputed forward pass's rounding, amplified by PONO's division by a 4-channel
  standard deviation, moves single entries by ~1e-4 of themselves."""
  kw = dict(filters=4, resnets=2, mixtures=2, orders=("s_curve:all",), dropout=0.3)
  with jax.enable_x64(True):
    plain, v = _model((4, 4, 1), 4, compute=dict(dtype="float64"), **kw)
    remat, _ = _model((4, 4, 1), 4, compute=dict(dtype="float64", remat="full"), **kw)
    v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 4, 1), 0, 4).astype(jnp.uint8)
    grads = [jax.jit(jax.grad(lambda v: m.loss(v, x, jax.random.PRNGKey(1))[0]))(v)
             for m in (plain, remat)]
    for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
      assert a.dtype == jnp.float64
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_completion_figure_png(rgb6, tmp_path):
  from PIL import Image
  from dgmjax.lmconv import figures
  model, variables, _ = rgb6
  x = jax.random.randint(jax.random.PRNGKey(2), (2, 6, 6, 3), 0, 8).astype(jnp.uint8)
  path = str(tmp_path / "completion.png")
  nll = figures.completion_figure(model, variables, jax.random.PRNGKey(3), x, path, scale=2)
  assert set(nll) == {"bottom_given", "centre_missing", "random_missing"}
  assert all(v > 0 for v in nll.values())
  img = np.asarray(Image.open(path))
  assert img.shape == (2 * (7 * 7 + 1), 2 * (2 * 7 + 1), 3)    # 7 rows of 2 images, pad 1


@pytest.mark.slow
def test_per_example_orders(rgb6):
  model, variables, _ = rgb6
  # one order per example: each example's loss is its own order's exact log-likelihood
  per_ex = dgmjax.models.create("lmconv", image_shape=(6, 6, 3), num_bins=8, filters=8,
                                resnets=1, mixtures=3, mask_weight=True, dropout=0.0,
                                orders=("raster", "s_curve:5"), per_example_orders=True)
  xr = jax.random.randint(jax.random.PRNGKey(3), (8, 6, 6, 3), 0, 8).astype(jnp.uint8)
  _, aux = jax.jit(lambda v, x: per_ex.loss(v, x, jax.random.PRNGKey(4)))(variables, xr)
  each = jax.jit(lambda v, x, o: per_ex.conditional_log_prob(v, x, o).sum(axis=(1, 2)))
  lp0, lp1 = each(variables, xr, jnp.asarray(per_ex.order_array[0])), each(
      variables, xr, jnp.asarray(per_ex.order_array[1]))
  nll = -float(aux["metrics"]["nll_nats"]) * 8
  sums = [float((lp0 * pick + lp1 * (1 - pick)).sum())
          for pick in (np.arange(256)[:, None] >> np.arange(8)) & 1]
  assert min(abs(nll - t) for t in sums) < 1e-3 * abs(nll)
