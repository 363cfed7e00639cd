"""The locally masked convolution: a plain convolution under an all-ones mask, the
masked sum of its definition otherwise (values and gradients), the one-location form,
and no k*k-times-larger tensor kept for the backward pass."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.ad_checkpoint import print_saved_residuals

from dgmjax.nn.shift_conv import locally_masked_conv, locally_masked_conv_at

B, H, W, CIN, COUT, K = 2, 7, 6, 3, 5, 3


def _inputs(seed=0, k=K):
  ks = jax.random.split(jax.random.PRNGKey(seed), 5)
  x = jax.random.normal(ks[0], (B, H, W, CIN))
  kernel = jax.random.normal(ks[1], (k, k, CIN, COUT))
  bias = jax.random.normal(ks[2], (COUT,))
  mask = (jax.random.uniform(ks[3], (B, H, W, k, k)) < 0.5).astype(jnp.float32)
  mw = jax.random.normal(ks[4], (k, k, COUT))
  return x, kernel, bias, mask, mw


def _reference(x, kernel, bias, mask, dilation, mask_weight=None):
  """The definition through im2col: patches [B,H,W,Cin,k*k] times mask, then the kernel."""
  k = kernel.shape[0]
  pad = (k // 2) * dilation
  patches = lax.conv_general_dilated_patches(
      x, (k, k), (1, 1), [(pad, pad), (pad, pad)], rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))          # [B,H,W,Cin*k*k], Cin major
  patches = patches.reshape(x.shape[:3] + (x.shape[3], k, k))
  m = mask if mask.ndim == 5 else mask[None]
  y = jnp.einsum("bhwqij,bhwij,ijqo->bhwo", patches, m, kernel) + bias
  if mask_weight is not None:
    y = y + jnp.einsum("bhwij,ijo->bhwo", m, mask_weight)
  return y


@pytest.mark.parametrize("dilation", [1, 2])
def test_all_ones_mask_is_a_plain_convolution(dilation):
  x, kernel, bias, _, _ = _inputs()
  pad = (K // 2) * dilation
  plain = lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad), (pad, pad)],
                                   rhs_dilation=(dilation, dilation),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
  ones = jnp.ones((H, W, K, K))
  np.testing.assert_allclose(locally_masked_conv(x, kernel, bias, ones, dilation), plain,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(locally_masked_conv(x, kernel, bias, None, dilation), plain,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation,per_example,with_mw", [(1, True, False), (2, False, True)])
def test_masked_values_and_gradients_match_the_definition(dilation, per_example, with_mw):
  x, kernel, bias, mask, mw = _inputs(1)
  mask = mask if per_example else mask[0]
  mw = mw if with_mw else None
  cot = jax.random.normal(jax.random.PRNGKey(9), (B, H, W, COUT))
  ours = lambda x, k, b, v: jnp.sum(cot * locally_masked_conv(x, k, b, mask, dilation, v))
  ref = lambda x, k, b, v: jnp.sum(cot * _reference(x, k, b, mask, dilation, v))
  np.testing.assert_allclose(locally_masked_conv(x, kernel, bias, mask, dilation, mw),
                             _reference(x, kernel, bias, mask, dilation, mw),
                             rtol=1e-4, atol=1e-4)
  argnums = (0, 1, 2, 3) if with_mw else (0, 1, 2)
  g1 = jax.grad(ours, argnums)(x, kernel, bias, mw)
  g2 = jax.grad(ref, argnums)(x, kernel, bias, mw)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_one_location_form_equals_the_full_layer():
  x, kernel, bias, mask, mw = _inputs(2)
  d = 2
  full = locally_masked_conv(x, kernel, bias, mask, d, mw)
  pad = (K // 2) * d
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  for r, c in [(0, 0), (3, 2), (6, 5)]:
    window = xp[:, r: r + 2 * pad + 1: d, c: c + 2 * pad + 1: d]
    np.testing.assert_allclose(locally_masked_conv_at(window, kernel, bias, mask[:, r, c], mw),
                               full[:, r, c], rtol=1e-5, atol=1e-5)


def test_backward_keeps_no_unfolded_input(capsys):
  x, kernel, bias, mask, _ = _inputs(3)
  print_saved_residuals(
      lambda x, k: locally_masked_conv(x, k, bias, mask, 1).sum(), x, kernel)
  sizes = [int(np.prod([int(d) for d in m.split(",") if d] or [1]))
           for m in re.findall(r"\[([0-9,]*)\]", capsys.readouterr().out)]
  assert sizes, "no residuals reported"
  # im2col would keep B*H*W*Cin*k*k numbers; we keep nothing larger than x or the mask
  assert max(sizes) <= max(x.size, mask.size, kernel.size) < x.size * K * K


def test_bad_shapes_raise():
  x, kernel, bias, mask, mw = _inputs()
  with pytest.raises(ValueError, match="mask"):
    locally_masked_conv(x, kernel, bias, mask[..., :2])
  with pytest.raises(ValueError, match="input channels"):
    locally_masked_conv(x[..., :2], kernel, bias, mask)
  with pytest.raises(ValueError, match="x must be"):
    locally_masked_conv(x[0], kernel, bias, mask)
  with pytest.raises(ValueError, match="dilation"):
    locally_masked_conv(x, kernel, bias, mask, 0)
  with pytest.raises(ValueError, match="mask_weight"):
    locally_masked_conv(x, kernel, bias, mask, 1, mw[..., :2])
