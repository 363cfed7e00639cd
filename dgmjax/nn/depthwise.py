"""Stride-1 depthwise convolution in three formulations.

``depthwise_conv(x, kernel, padding, dilation, impl, taps)``: x [B,H,W,C], kernel
[k,k,1,C] (HWIO with one input channel per group) -> [B,H,W,C], a cross-correlation
like PyTorch's and XLA's:  y = sum over taps (i, j) of shift_ij(pad(x)) * kernel[i,j,0].

- ``"shift"``: that sum of k*k shifted multiply-adds, a ``jax.custom_jvp`` whose tangent
  is linear in (dx, dkernel); the dx part is written as the scatter (pad) form of the
  same sum, so that its transpose, the backward pass, is a gather of slices of pad(dy)
  that XLA fuses into one loop. Every transformation works (grad, jvp, jacfwd, jacrev,
  linearize, Hessian-vector products).
- ``"shift_vjp"``: the same forward with a hand-written backward (``jax.custom_vjp``):
  the kernel gradient of all taps as ONE variadic reduction, so x and dy are read once.
  Reverse mode only (``jax.jvp``/``jax.jacfwd`` raise). A single layer's backward pass
  is several times faster than ``"shift"``'s on CPU, with a fraction of its temporary
  memory, but the whole NVAE train step measured the same with either
  (experiments/results/HISTORY.md).
- ``"grouped"``: XLA's ``feature_group_count=C`` convolution (cuDNN's / the TPU's native
  depthwise kernels; slow on CPU).

They agree to float rounding in values and gradients (tests/nn/test_nn_depthwise.py).
``"auto"`` is ``"shift"`` on CPU (the default keeps forward mode) and ``"grouped"`` on
GPU/TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLS = ("auto", "shift", "shift_vjp", "grouped")


def resolve_impl(impl: str, backend: str | None = None) -> str:
  """The concrete formulation ``impl`` stands for ("auto": shift on CPU, else grouped)."""
  if impl not in IMPLS:
    raise ValueError(f"depthwise impl must be one of {IMPLS}; got {impl!r}")
  if impl != "auto":
    return impl
  return "shift" if (backend or jax.default_backend()) == "cpu" else "grouped"


def depthwise_conv(x, kernel, padding: int, dilation: int = 1, impl: str = "auto",
                   taps=None):
  """Stride-1 depthwise convolution (cross-correlation, like PyTorch/XLA).

  x: [B,H,W,C]; kernel: [k,k,1,C] -> [B,H,W,C] for ``padding = dilation*(k-1)/2``.
  ``impl``: one of ``IMPLS`` (module docstring). ``taps`` (shift forms): the (i, j) taps to sum,
  default all k*k; a masked kernel whose other taps are zero for every channel (NVAE's
  autoregressive 5x5: 13 of 25) skips them.
  """
  c = x.shape[-1]
  impl = resolve_impl(impl)
  if impl == "grouped":
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(padding, padding)] * 2, rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
  k = kernel.shape[0]
  if 2 * padding != dilation * (k - 1):
    raise ValueError(f"shift depthwise conv keeps the size: padding must be dilation*(k-1)/2 "
                     f"= {dilation * (k - 1) / 2}; got {padding}")
  taps = (tuple((i, j) for i in range(k) for j in range(k)) if taps is None
          else tuple((int(i), int(j)) for i, j in taps))
  if impl == "shift_vjp":
    return _depthwise_shift(x, kernel, padding, dilation, taps)
  return _depthwise_shift_jvp(x, kernel, padding, dilation, taps)


def _shifted(xp, i, j, h, w, dilation):
  """Tap (i, j)'s view of the padded input: xp[:, d*i : d*i+h, d*j : d*j+w, :]."""
  return xp[:, i * dilation:i * dilation + h, j * dilation:j * dilation + w, :]


def _shift_sum(xp, kernel, h, w, dilation, taps):
  """sum_{(i,j) in taps} shifted(xp, i, j) * kernel[i, j, 0]."""
  out = None
  for i, j in taps:
    tap = _shifted(xp, i, j, h, w, dilation) * kernel[i, j, 0]
    out = tap if out is None else out + tap
  return out


def _scatter_sum(x, kernel, padding, dilation, taps):
  """The same shifted sum written as scatters: crop(sum_t place_t(x * kernel[t])), where
  place_t zero-pads x into the padded frame at the offset tap t reads it from. Its
  transpose is ``_shift_sum`` of pad(dy) with the kernel flipped: slices, not pads."""
  h, w, p = x.shape[1], x.shape[2], padding
  out = None
  for i, j in taps:
    oi, oj = 2 * p - i * dilation, 2 * p - j * dilation
    z = jnp.pad(x * kernel[i, j, 0], ((0, 0), (oi, 2 * p - oi), (oj, 2 * p - oj), (0, 0)))
    out = z if out is None else out + z
  return out[:, p:p + h, p:p + w]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _depthwise_shift_jvp(x, kernel, padding, dilation, taps):
  return _shift_sum(_pad_hw(x, padding), kernel, x.shape[1], x.shape[2], dilation, taps)


@_depthwise_shift_jvp.defjvp
def _depthwise_shift_tangent(padding, dilation, taps, primals, tangents):
  """dy = shift_sum(dx, kernel) + shift_sum(x, dkernel), linear in (dx, dkernel)."""
  x, kernel = primals
  dx, dkernel = tangents
  y = _depthwise_shift_jvp(x, kernel, padding, dilation, taps)
  dy = _scatter_sum(dx, kernel, padding, dilation, taps)
  dy = dy + jax.checkpoint(lambda x, dk: _scatter_sum(x, dk, padding, dilation, taps))(
      x, dkernel.astype(x.dtype))
  return y, dy


def _pad_hw(x, padding):
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_shift(x, kernel, padding, dilation, taps):
  return _shift_sum(_pad_hw(x, padding), kernel, x.shape[1], x.shape[2], dilation, taps)


def _depthwise_shift_fwd(x, kernel, padding, dilation, taps):
  return _depthwise_shift(x, kernel, padding, dilation, taps), (x, kernel)


def _depthwise_shift_bwd(padding, dilation, taps, res, g):
  """Input gradient: the same shifted sum over pad(g) with the kernel flipped (one fused
  pass, like the forward). Kernel gradient: dk[i,j,c] = sum_{b,h,w}
  shift_ij(pad(x))[b,h,w,c] g[b,h,w,c] for all taps as ONE variadic reduction, so x and g
  are read once. Autodiff of the forward instead materialises every shifted copy of x
  and runs k*k separate reductions: measured on a 2-core CPU, the paper's MNIST
  NVAE gradient 1117 -> 826 ms and its temporary memory 2241 -> 935 MB with this rule."""
  x, kernel = res
  h, w = x.shape[1], x.shape[2]
  k = kernel.shape[0]
  flipped = tuple((k - 1 - i, k - 1 - j) for i, j in taps)
  dx = _shift_sum(_pad_hw(g, padding), kernel[::-1, ::-1], h, w, dilation, flipped)
  xp = _pad_hw(x, padding)
  prods = tuple((_shifted(xp, i, j, h, w, dilation) * g).astype(jnp.float32) for i, j in taps)
  sums = jax.lax.reduce(prods, (jnp.float32(0),) * len(taps),
                        lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
  dk = jnp.zeros(kernel.shape, jnp.float32)
  rows, cols = np.asarray(taps).T
  dk = dk.at[rows, cols, 0].set(jnp.stack(sums))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)
