"""dgmjax.lmconv.completion: observed regions from specs and PNG masks, observed-first
completion orders, completions equal to the image where observed and the hidden region's
conditional bits/dim."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax
from dgmjax.lmconv import completion
from dgmjax.lmconv import orders as orders_lib


def test_observed_masks(tmp_path):
  h, w = 6, 8
  top = completion.observed_mask("top", h, w)
  assert top[:3].all() and not top[3:].any()
  assert completion.observed_mask("bottom", h, w)[3:].all()
  assert completion.observed_mask("left", h, w)[:, :4].all()
  right = completion.observed_mask("right", h, w)
  assert right[:, 4:].all() and not right[:, :4].any()
  center = completion.observed_mask("center", h, w)
  assert not center[1:5, 2:6].any() and center.sum() == h * w - 16
  r = completion.observed_mask("random:0.3", 40, 40, rng=1)
  assert abs(r.mean() - 0.3) < 0.05
  np.testing.assert_array_equal(r, completion.observed_mask("random:0.3", 40, 40, rng=1))
  from PIL import Image
  img = np.zeros((h, w), np.uint8)
  img[:, :2] = 255
  Image.fromarray(img).save(tmp_path / "m.png")
  np.testing.assert_array_equal(completion.observed_mask(str(tmp_path / "m.png"), h, w),
                                img > 127)
  for bad, word in (("middle", "unknown observed"), ("random:1.5", r"P in \[0, 1\]"),
                    (str(tmp_path / "none.png"), "not found")):
    with pytest.raises(ValueError, match=word):
      completion.observed_mask(bad, h, w)
  with pytest.raises(ValueError, match="must be 4x8"):
    completion.observed_mask(str(tmp_path / "m.png"), 4, 8)


@pytest.mark.slow
def test_completion_order_and_complete():
  model = dgmjax.models.create("lmconv", image_shape=(6, 6, 1), num_bins=4, filters=8,
                               resnets=1, mixtures=2, dropout=0.0)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 4, (2, 6, 6, 1)), jnp.uint8)
  variables = model.init(jax.random.PRNGKey(0), x)
  mask = completion.observed_mask("top", 6, 6)
  base = orders_lib.named("s_curve", 6, 6, 1)       # starts at the bottom row
  comp = completion.completion_order(mask, base)
  rank = orders_lib.ranks(comp).reshape(6, 6)
  assert rank[mask].max() < rank[~mask].min()
  done, bpd = completion.complete(model, variables, x, mask, "s_curve:1", jax.random.PRNGKey(1),
                                 num=3)
  assert done.shape == (2, 3, 6, 6, 1) and done.dtype == jnp.uint8
  obs = np.broadcast_to(mask[None, None, :, :, None], done.shape)
  np.testing.assert_array_equal(np.asarray(done)[obs],
                                np.broadcast_to(np.asarray(x)[:, None], done.shape)[obs])
  want = -model.hidden_log_prob(variables, x, mask, "s_curve:1") / (18 * math.log(2))
  np.testing.assert_allclose(bpd, want, rtol=1e-5)
  assert bool(jnp.all(bpd > 0))
  with pytest.raises(ValueError, match="nothing to complete"):
    completion.complete(model, variables, x, np.ones((6, 6), bool), None, jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match="bool"):
    completion.completion_order(np.ones((5, 6), bool), base)
