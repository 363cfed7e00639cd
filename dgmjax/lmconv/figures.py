"""Completion figures: observed regions given, the rest sampled by an LMConv model.

``completion_masks(h, w)`` gives three observed masks (bool [H,W], True = given):

- ``bottom_given``: the bottom half observed, the top half completed;
- ``centre_missing``: the central (H/2 x W/2) block hidden;
- ``random_missing``: half of the pixels hidden at random (a fixed seed).

``completion_figure`` writes one PNG: a row of the originals, then for each mask a row of
the masked inputs (hidden pixels shown mid-grey) and a row of completions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import imageio


def completion_masks(h: int, w: int, seed: int = 0) -> dict[str, np.ndarray]:
  bottom = np.zeros((h, w), bool)
  bottom[h // 2:] = True
  centre = np.ones((h, w), bool)
  centre[h // 4: h - h // 4, w // 4: w - w // 4] = False
  rand = np.random.default_rng(seed).random((h, w)) >= 0.5
  return {"bottom_given": bottom, "centre_missing": centre, "random_missing": rand}


def completion_figure(model, variables, rng, x, path: str, scale: int = 4,
                      **sample_kwargs) -> dict[str, float]:
  """Completes x (uint8 [B,H,W,C]) under each mask of ``completion_masks`` and writes the
  PNG to ``path``. Returns, per mask, the mean conditional NLL of the hidden region of
  the originals in nats (``-model.hidden_log_prob``)."""
  h, w, _ = model.image_shape
  x = jnp.asarray(x, jnp.uint8)
  grey = np.full(x.shape, model.num_bins // 2, np.uint8)
  rows, nll = [np.asarray(x)], {}
  complete = jax.jit(lambda v, r, x, o: model.complete(v, r, x, o, **sample_kwargs))
  hidden = jax.jit(lambda v, x, o: model.hidden_log_prob(v, x, o))
  for i, (name, obs) in enumerate(completion_masks(h, w).items()):
    done = complete(variables, jax.random.fold_in(rng, i), x, jnp.asarray(obs))
    rows.append(np.where(obs[None, :, :, None], np.asarray(x), grey))
    rows.append(np.asarray(done))
    nll[name] = float(-jnp.mean(hidden(variables, x, jnp.asarray(obs))))
  grid = imageio.make_grid(np.concatenate(rows), model.num_bins, ncol=x.shape[0])
  imageio.save_png(path, grid, scale=scale)
  return nll
