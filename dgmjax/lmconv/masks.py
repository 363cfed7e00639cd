"""Per-location kernel masks of a locally masked convolution, from a generation order.

For an order with ranks ``rank[r, c]`` (position of pixel (r, c) in the order), a k x k
kernel with dilation d centred at (r, c) sees the tap (i, j), i.e. the pixel
``(r + (i - k//2) d, c + (j - k//2) d)``, iff that pixel is inside the image and

- first layer (PixelCNN "mask A"): ``rank[tap] < rank[r, c]`` (strictly earlier pixels:
  the pixel itself is what is being predicted);
- later layers ("mask B"): the same, plus the centre tap, whose features already depend
  only on strictly earlier pixels.

Padding taps are always masked (ajayjain/lmconv ``kernel_masks`` with ``set_padding=0``),
so the ones channel of the first layer counts the visible in-image taps. By induction
every feature at (r, c) depends only on pixels earlier than (r, c), whatever the order.

Shapes: ``mask[r, c, i, j]`` float [H, W, k, k]; a batch of orders gives [B, H, W, k, k].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.lmconv import orders as orders_lib


def kernel_masks(order, h: int, w: int, kernel_size: int = 3, dilation: int = 1,
                 include_center: bool = False, dtype=jnp.float32):
  """Masks [H, W, k, k] for an order int [H*W] (numpy or traced; [..., H*W] batches).

  include_center=False is the first layer's mask, True the later layers'.
  """
  if kernel_size % 2 != 1 or kernel_size < 1:
    raise ValueError(f"kernel_size must be a positive odd int; got {kernel_size}")
  if dilation < 1:
    raise ValueError(f"dilation must be >= 1; got {dilation}")
  order = jnp.asarray(order)
  if order.ndim > 1:
    fn = lambda o: kernel_masks(o, h, w, kernel_size, dilation, include_center, dtype)
    return jax.vmap(fn)(order.reshape(-1, h * w)).reshape(
        order.shape[:-1] + (h, w, kernel_size, kernel_size))
  half = kernel_size // 2
  pad = half * dilation
  rank = orders_lib.ranks(order.astype(jnp.int32)).reshape(h, w)
  big = jnp.int32(h * w)                   # padding ranks: never earlier than anything
  padded = jnp.pad(rank, pad, constant_values=big)
  taps = []
  for i in range(kernel_size):
    row = []
    for j in range(kernel_size):
      nb = padded[i * dilation: i * dilation + h, j * dilation: j * dilation + w]
      visible = nb < rank
      if i == half and j == half:
        visible = jnp.full_like(visible, include_center)
      row.append(visible)
    taps.append(jnp.stack(row, axis=-1))
  return jnp.stack(taps, axis=-2).astype(dtype)


def network_masks(order, h: int, w: int, kernel_size: int = 3, max_dilation: int = 2,
                  dtype=jnp.float32):
  """The three masks an LMConv network uses (ajayjain/lmconv ``get_masks``):

  ``(first [.., H,W,k,k], later [.., H,W,k,k], dilated [.., H,W,k,k])`` for the first
  layer, the undilated later layers, and the dilation-``max_dilation`` layers.
  """
  return (kernel_masks(order, h, w, kernel_size, 1, False, dtype),
          kernel_masks(order, h, w, kernel_size, 1, True, dtype),
          kernel_masks(order, h, w, kernel_size, max_dilation, True, dtype))


def numpy_network_masks(orders, h: int, w: int, kernel_size: int = 3,
                        max_dilation: int = 2) -> tuple[np.ndarray, ...]:
  """``network_masks`` for a stack of concrete orders int [N, H*W], as numpy float32
  [N, H, W, k, k] constants (computed once per model)."""
  return tuple(np.asarray(m) for m in network_masks(np.asarray(orders), h, w, kernel_size,
                                                    max_dilation))
