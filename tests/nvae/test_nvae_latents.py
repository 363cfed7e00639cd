"""NVAE latent access (``NVAEModel.encode/decode_logits/decode/interpolate``) on a tiny
two-scale model with one IAF pair per group (G = 3 groups: 1 coarse, 2 fine), all jitted
with the model closed over:

- ``encode(rng=None)`` is deterministic, has ``latent_shapes()``, and is the posterior
  mean: decoding it gives exactly the logits of the ELBO forward pass (``NVAENet.__call__``)
  run with eps_j = 0 for every group;
- ``encode(rng)`` draws the same z's as the ELBO forward pass with the same "sample" key
  (decoding them reproduces its logits) and differs from the means;
- ``interpolate``'s end points are decode(encode(x1)) and decode(encode(x2));
- ``decode`` is the temperature-0 image: for the grey mixture the top component's mean
  rounded to a level (checked against numpy), for the Bernoulli head 1[logit > 0], zero
  outside ``crop_to``;
- bad images, latents and arguments raise ValueError.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import models

TINY = dict(channels=4, scales=2, groups_per_scale=2, ada_groups=True, use_se=False,
            latents_per_group=2, cells_per_group=1, preprocess_blocks=1, preprocess_cells=1,
            postprocess_blocks=1, postprocess_cells=1, num_flows=1,
            compute=dict(depthwise="grouped"))

# Every test here shares a module fixture that compiles an NVAE: minutes in all.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny():
  model = models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **TINY)
  x = jax.random.randint(jax.random.PRNGKey(0), (3, 8, 8, 1), 0, 17).astype(jnp.uint8)
  v = model.init(jax.random.PRNGKey(1), x)
  return dict(
      model=model, x=x, v=v, nv={k: v[k] for k in ("params", "batch_stats")},
      encode=jax.jit(lambda v, x, r=None: model.encode(v, x, r)),
      decode=jax.jit(lambda v, zs: (model.decode_logits(v, zs), model.decode(v, zs))),
      forward=jax.jit(lambda nv, xin, eps, r: model.net.apply(nv, xin, False, eps,
                                                              rngs={"sample": r})))


def test_encode_mean_is_deterministic_and_matches_elbo_forward(tiny):
  model, v, x = tiny["model"], tiny["v"], tiny["x"]
  zs = tiny["encode"](v, x)
  assert model.groups == (2, 1)
  assert [z.shape for z in zs] == [(3,) + s for s in model.latent_shapes()]
  assert model.latent_shapes() == [(2, 2, 2), (4, 4, 2), (4, 4, 2)]
  for a, b in zip(zs, tiny["encode"](v, x)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  eps = [jnp.zeros(z.shape) for z in zs]
  # the key is unused when eps is given: every z_j = mu_j + sigma_j * 0, then the flows
  xin = model._inputs(x)  # pylint: disable=protected-access
  want, _ = tiny["forward"](tiny["nv"], xin, eps, jax.random.PRNGKey(9))
  got, img = tiny["decode"](v, zs)
  assert got.shape == (3, 8, 8, model.out_channels) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert img.shape == x.shape and img.dtype == jnp.uint8
  # decode: the grey mixture's top component mean, clipped and rounded to one of K levels
  m, k, lg = model.num_mixtures, model.num_bins, np.asarray(got)
  top = np.argmax(lg[..., :m], axis=-1)[..., None]
  mean = np.take_along_axis(lg[..., m:2 * m], top, -1)               # [means | log_scales]
  want_img = np.round((np.clip(mean, -1, 1) + 1) / 2 * (k - 1)).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(img), want_img)


def test_encode_with_rng_draws_the_elbo_posterior_sample(tiny):
  model, v, x = tiny["model"], tiny["v"], tiny["x"]
  r = jax.random.PRNGKey(3)
  zr = tiny["encode"](v, x, r)
  zs = tiny["encode"](v, x)
  assert [z.shape for z in zr] == [z.shape for z in zs]
  assert all(not np.allclose(a, b) for a, b in zip(zr, zs))
  xin = model._inputs(x)  # pylint: disable=protected-access
  want, _ = tiny["forward"](tiny["nv"], xin, None, r)
  np.testing.assert_allclose(np.asarray(tiny["decode"](v, zr)[0]), np.asarray(want),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_interpolate_end_points_are_reconstructions(tiny):
  model, v, x = tiny["model"], tiny["v"], tiny["x"]
  interp = jax.jit(lambda v, a, b: model.interpolate(v, a, b, num=3))(v, x[:2], x[1:3])
  assert interp.shape == (2, 3, 8, 8, 1) and interp.dtype == jnp.uint8
  assert int(jnp.max(interp)) < model.num_bins
  rec = tiny["decode"](v, tiny["encode"](v, x))[1]
  np.testing.assert_array_equal(np.asarray(interp[:, 0]), np.asarray(rec[:2]))
  np.testing.assert_array_equal(np.asarray(interp[:, -1]), np.asarray(rec[1:3]))


def test_bernoulli_decode_is_the_mode_inside_the_crop(tiny):
  model = models.create("nvae", image_shape=(8, 8, 1), num_bins=2, crop_to=(6, 6), **TINY)
  # the same network but for the head's width (1 logit instead of 30 mixture outputs)
  ic = jax.tree.map(lambda a: a[..., :1], tiny["v"]["params"]["image_conditional"])
  v = {**tiny["v"], "params": {**tiny["v"]["params"], "image_conditional": ic}}
  x = (tiny["x"] > 8).astype(jnp.uint8)
  zs = jax.jit(lambda v, x: model.encode(v, x))(v, x)
  dec = jax.jit(lambda v, zs: (model.decode_logits(v, zs), model.decode(v, zs)))
  # untrained logits sit in a narrow band: shift the bias so that about half are > 0
  ic = {**ic, "bias": ic["bias"] - jnp.median(dec(v, zs)[0])}
  v = {**v, "params": {**v["params"], "image_conditional": ic}}
  logits, img = (np.asarray(a) for a in dec(v, zs))
  assert logits.shape == (3, 8, 8, 1) and img.dtype == np.uint8 and img.shape == x.shape
  np.testing.assert_array_equal(img[:, 1:7, 1:7], (logits[:, 1:7, 1:7] > 0).astype(np.uint8))
  inside = np.zeros((8, 8), bool)
  inside[1:7, 1:7] = True
  assert (logits[:, ~inside] > 0).any()          # the mask, not the logits, gives the zeros
  assert not img[:, ~inside].any()


def test_bad_inputs_raise(tiny):
  model, v, x = tiny["model"], tiny["v"], tiny["x"]
  with pytest.raises(ValueError, match="integers"):
    model.encode(v, x.astype(jnp.float32))
  with pytest.raises(ValueError, match="shape"):
    model.encode(v, x[:, :4])
  with pytest.raises(ValueError, match="values"):
    model.encode(v, x.at[0, 0, 0, 0].set(17))
  shapes = [(3,) + s for s in model.latent_shapes()]
  zs = [jnp.zeros(s) for s in shapes]
  with pytest.raises(ValueError, match="3 arrays"):
    model.decode_logits(v, zs[:2])
  with pytest.raises(ValueError, match="one B"):
    model.decode(v, zs[:2] + [jnp.zeros((2,) + shapes[2][1:])])
  with pytest.raises(ValueError, match="same shape"):
    model.interpolate(v, x[:2], x[:1])
  with pytest.raises(ValueError, match="positive int"):
    model.interpolate(v, x, x, num=0)
  with pytest.raises(ValueError, match="'mean'"):
    jax.eval_shape(lambda xin: model.net.apply(tiny["nv"], xin, "median",
                                               method=type(model.net).encode),
                   model._inputs(x))  # pylint: disable=protected-access
