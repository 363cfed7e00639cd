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
- ``"xla_matmul_vjp"``: XLA's convolution forward with a hand-written backward of
  matmuls: dL/dx = ``"matmul"`` convolution of dL/dy with the flipped, transposed
  kernel; dL/dkernel[i,j] = shift_ij(x)[BHW,I]^T @ dL/dy[BHW,O] (k*k matmuls).
  Why: inside a ``lax.scan``/while loop, XLA:CPU keeps the backward convolutions
  JAX derives in non-canonical dimension orders (input gradient ``b01f_01oi``, kernel
  gradient ``f01b_i01o->01bf``), which it runs on its slow generic loop rather than
  Eigen's convolution; unrolled, it rewrites them to ``b01f_01io->b01f``. Measured on
  this 2-core CPU, the gradient of one Glow level (K=4, width 512, B16 16x16x12):
  ``"xla"`` 0.21 s unrolled but 1.23 s scanned; ``"xla_matmul_vjp"`` 0.19 s unrolled and
  0.21 s scanned; ``"matmul"`` 0.46 s either way.
- ``"auto"``: ``"xla"`` on GPU/TPU; on CPU ``"matmul"`` when O < I, else
  ``"xla_matmul_vjp"``.

``"xla_matmul_vjp"`` is a ``jax.custom_vjp``: reverse mode only (``jax.grad``,
``jax.vjp``, ``jax.jacrev``); forward mode (``jax.jvp``, ``jax.jacfwd``) needs
``impl="xla"`` or ``"matmul"``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dgmjax.nn.shift_conv import locally_masked_conv

IMPLS = ("auto", "xla", "matmul", "xla_matmul_vjp")


def resolve_impl(impl: str, cin: int, cout: int, backend: str | None = None) -> str:
  """The concrete formulation ``impl`` stands for (see the module docstring)."""
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}; got {impl!r}")
  if impl != "auto":
    return impl
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  return "matmul" if cout < cin else "xla_matmul_vjp"


def _xla_conv(x, kernel):
  p = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def _xla_matmul_vjp(x, kernel):
  return _xla_conv(x, kernel)


def _fwd(x, kernel):
  return _xla_conv(x, kernel), (x, kernel)


def _bwd(res, dy):
  x, kernel = res
  k, p = kernel.shape[0], kernel.shape[0] // 2
  b, h, w, c = x.shape
  flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)).astype(dy.dtype)
  dx = locally_masked_conv(dy, flipped)
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  dy2 = dy.reshape(b * h * w, -1)
  dk = jnp.stack([jnp.stack([xp[:, i:i + h, j:j + w].reshape(b * h * w, c).T @ dy2
                             for j in range(k)]) for i in range(k)])
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_xla_matmul_vjp.defvjp(_fwd, _bwd)


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
  return _xla_matmul_vjp(x, kernel)
