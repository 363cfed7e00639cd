"""A stride-1 'same' k x k convolution with one formulation per backend.

``conv_same(x, kernel, impl)``: x [B,H,W,I], kernel [k,k,I,O] (HWIO, odd k) -> y [B,H,W,O]
in x's dtype, y[b,r,c,o] = sum_{i,j,q} kernel[i,j,q,o] x[b, r+i-k//2, c+j-k//2, q] with
x = 0 outside the image (a cross-correlation, like PyTorch's and XLA's). Every ``impl``
computes the same function and the same gradients to float rounding
(tests/nn/test_nn_conv.py):

- ``"xla"``: XLA's convolution forward, and the backward convolutions JAX derives.
  cuDNN / the TPU convolution units: the choice on GPU and TPU.
- ``"matmul"``: one matmul by all taps and a shift-and-add of the k*k output slices
  (``dgmjax.nn.shift_conv.locally_masked_conv`` without a mask), forward and backward.
  On CPU it beats XLA's convolution when O < I (Glow's zero conv, width -> C:
  ``flows/conditioners.py``).
- ``"xla_matmul"``: XLA's convolution forward, with a tangent rule (``jax.custom_jvp``)
  that is linear in the tangents and written as matmuls of im2col patches:
  d y = im2col(dx) @ K[k*k*I, O] + im2col(x) @ dK[k*k*I, O]. Forward mode evaluates it
  directly; reverse mode transposes it, which gives a backward pass of matmuls:
  dL/dx = col2im(dL/dy @ K^T) (one matmul, then a shift-and-add of the k*k slices) and
  dL/dK = im2col(x)^T @ dL/dy (one matmul; im2col(x) is recomputed in the backward pass,
  ``jax.checkpoint``, so the k*k-times larger patches are never stored). Why: inside a
  ``lax.scan``/while loop, XLA:CPU keeps the backward convolutions JAX derives for
  ``"xla"`` in non-canonical dimension orders (input gradient ``b01f_01oi``, kernel
  gradient ``f01b_i01o->01bf``), which it runs on its slow generic loop rather than
  Eigen's convolution, several times slower (experiments/results/HISTORY.md).
- ``"auto"``: ``"xla"`` on GPU/TPU; on CPU ``"matmul"`` when O < I, else
  ``"xla_matmul"``.

Every formulation works under ``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ``jax.jacrev``,
``jax.linearize`` and Hessian-vector products (tests/nn/test_nn_conv.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dgmjax.nn.shift_conv import locally_masked_conv

IMPLS = ("auto", "xla", "matmul", "xla_matmul")


def resolve_impl(impl: str, cin: int, cout: int, backend: str | None = None) -> str:
  """The concrete formulation ``impl`` stands for (see the module docstring)."""
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}; got {impl!r}")
  if impl != "auto":
    return impl
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  return "matmul" if cout < cin else "xla_matmul"


def _xla_conv(x, kernel):
  p = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def im2col(x, k: int):
  """x [B,H,W,I] -> patches [B,H,W,k*k*I]: the zero-padded k x k neighbourhood of every
  pixel, taps in row-major (i, j) order and channels fastest, so that
  ``im2col(x, k) @ kernel.reshape(k*k*I, O)`` is the 'same' convolution."""
  p = k // 2
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], -1)


@jax.checkpoint
def _patch_matmul(x, kernel):
  """im2col(x) @ kernel[k*k*I, O]; rematerialised, so only x is kept for its transpose."""
  return im2col(x, kernel.shape[0]) @ kernel.reshape(-1, kernel.shape[-1])


@jax.custom_jvp
def _xla_matmul(x, kernel):
  return _xla_conv(x, kernel)


@_xla_matmul.defjvp
def _xla_matmul_jvp(primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  k = kernel.shape[0]
  dy = im2col(dx, k) @ kernel.reshape(-1, kernel.shape[-1]).astype(dx.dtype)
  dy = dy + _patch_matmul(x, dkernel.astype(x.dtype))
  return _xla_conv(x, kernel), dy


def conv_same(x, kernel, impl: str = "auto"):
  """y = x (*) kernel, stride 1, zero 'same' padding. x: [B,H,W,I]; kernel: [k,k,I,O]."""
  if x.ndim != 4:
    raise ValueError(f"x must be [B,H,W,I]; got shape {x.shape}")
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != 1 \
      or kernel.shape[2] != x.shape[3]:
    raise ValueError(f"kernel must be [k,k,{x.shape[3]},O] with odd k; got shape "
                     f"{kernel.shape}")
  kernel = kernel.astype(x.dtype)
  impl = resolve_impl(impl, kernel.shape[2], kernel.shape[3])
  if impl == "xla":
    return _xla_conv(x, kernel)
  if impl == "matmul":
    return locally_masked_conv(x, kernel)
  return _xla_matmul(x, kernel)
