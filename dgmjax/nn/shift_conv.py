"""The matmul + masked shift-and-add convolution core: the locally masked convolution
(Jain, Abbeel & Pathak 2020) as a pure function, and with ``mask=None`` a plain 'same'
convolution (Glow's 3x3 convolutions use it so).

A k x k convolution with dilation d and 'same' zero padding whose kernel is masked
differently at every output location:

    y[b, r, c, o] = bias[o] + sum_{i, j, q} M[(b,) r, c, i, j] * W[i, j, q, o]
                                            * x[b, r + (i - k//2) d, c + (j - k//2) d, q]
                    (+ sum_{i, j} M[(b,) r, c, i, j] * V[i, j, o]   with ``mask_weight`` V)

(x taken as 0 outside the image). The ``mask_weight`` term is the official option of a
learned weight on the mask itself (ajayjain/lmconv ``locally_masked_conv2d(mask_weight=
True)``: equivalent to concatenating the mask as extra input channels).

Layout. The official layer unfolds x into a k*k-times larger im2col tensor, masks it and
multiplies, and keeps the unfolded input for its hand-written backward. Here the input
is multiplied ONCE by all taps of the kernel, ``z = x[BHW, Cin] @ W[Cin, k*k*Cout]``, and
the output is the masked sum of the k*k shifted output slices,
``y[r, c] = sum_t M[r, c, t] z[r + s_t, c, t]``. JAX differentiates it; the backward of
the shift-and-add is linear with the (constant) mask as coefficient, so what is kept for
the backward pass is only x and the mask, never a k*k-times larger tensor. The FLOPs are
those of a plain convolution (measured faster than the official unfold + mask + matmul on
CPU: experiments/results/HISTORY.md).

Shapes: x [B,H,W,Cin]; kernel [k,k,Cin,Cout] (HWIO, as flax/lax); bias [Cout] or None;
mask [H,W,k,k] shared by the batch, [B,H,W,k,k] per example, or None (all ones: a plain
convolution); mask_weight [k,k,Cout] or None. Output [B,H,W,Cout] in x's dtype.
"""

from __future__ import annotations

import jax.numpy as jnp


def _check(x, kernel, bias, mask, mask_weight, dilation):
  if x.ndim != 4:
    raise ValueError(f"x must be [B,H,W,Cin]; got shape {x.shape}")
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 != 1:
    raise ValueError(f"kernel must be [k,k,Cin,Cout] with odd k; got shape {kernel.shape}")
  b, h, w, cin = x.shape
  k, _, kin, cout = kernel.shape
  if kin != cin:
    raise ValueError(f"kernel expects {kin} input channels but x has {cin}")
  if bias is not None and bias.shape != (cout,):
    raise ValueError(f"bias must be [{cout}]; got {bias.shape}")
  if mask is not None and mask.shape not in ((h, w, k, k), (b, h, w, k, k)):
    raise ValueError(f"mask must be [H,W,k,k] = {(h, w, k, k)} or [B,H,W,k,k]; "
                     f"got {mask.shape}")
  if mask_weight is not None and mask_weight.shape != (k, k, cout):
    raise ValueError(f"mask_weight must be [k,k,Cout] = {(k, k, cout)}; got {mask_weight.shape}")
  if not isinstance(dilation, int) or dilation < 1:
    raise ValueError(f"dilation must be an int >= 1; got {dilation!r}")


def locally_masked_conv(x, kernel, bias=None, mask=None, dilation: int = 1, mask_weight=None):
  """y = locally masked conv of x (see the module docstring). x: [B,H,W,Cin] -> [B,H,W,Cout]."""
  _check(x, kernel, bias, mask, mask_weight, dilation)
  b, h, w, cin = x.shape
  k, _, _, cout = kernel.shape
  pad = (k // 2) * dilation
  dtype = x.dtype
  wmat = jnp.transpose(kernel.astype(dtype), (2, 0, 1, 3)).reshape(cin, k * k * cout)
  z = (x.reshape(b * h * w, cin) @ wmat).reshape(b, h, w, k * k, cout)
  z = jnp.pad(z, ((0, 0), (pad, pad), (pad, pad), (0, 0), (0, 0)))
  m = None if mask is None else mask.astype(dtype)
  if m is not None and m.ndim == 4:
    m = m[None]
  y = None
  for i in range(k):
    for j in range(k):
      tap = z[:, i * dilation: i * dilation + h, j * dilation: j * dilation + w, i * k + j]
      if m is not None:
        tap = tap * m[..., i, j, None]
      y = tap if y is None else y + tap
  if bias is not None:
    y = y + bias.astype(dtype)
  if mask_weight is not None:
    mm = jnp.ones((1, h, w, k, k), dtype) if m is None else m
    y = y + jnp.einsum("bhwij,ijo->bhwo", mm, mask_weight.astype(dtype))
  return y


def locally_masked_conv_at(window, kernel, bias=None, mask=None, mask_weight=None):
  """The same layer evaluated at ONE output location per example.

  window: [B,k,k,Cin] the (dilated) k x k input neighbourhood of the location (zeros
  outside the image); mask: [k,k] or [B,k,k] the location's kernel mask (None = ones).
  Returns [B,Cout]; equals ``locally_masked_conv(...)[:, r, c]`` for that location.
  Used by the cached sampler, which evaluates the network one pixel at a time.
  """
  dtype = window.dtype
  k = kernel.shape[0]
  m = jnp.ones((k, k), dtype) if mask is None else mask.astype(dtype)
  if m.ndim == 2:
    m = jnp.broadcast_to(m, (window.shape[0], k, k))
  y = jnp.einsum("bijq,ijqo->bo", window * m[..., None], kernel.astype(dtype))
  if bias is not None:
    y = y + bias.astype(dtype)
  if mask_weight is not None:
    y = y + jnp.einsum("bij,ijo->bo", m, mask_weight.astype(dtype))
  return y
