"""Weight normalisation (Salimans & Kingma 2016): w = g * v / (||v|| + eps).

One function for both official variants; each model keeps its official parameter names:

- LMConv / PixelCNN++ (``torch.nn.utils.weight_norm``): ``g`` is the learned ``scale``
  (PyTorch ``weight_g``), eps = 0, initialised to ||v|| so that w == v at init.
- NVAE (``Conv2D`` with ``log_weight_norm``): g = exp(``log_weight_norm``), eps = 1e-5,
  initialised to log(||v|| + 1e-2).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def norm(v, axes: Sequence[int]):
  """||v|| over ``axes`` (kept out of the result): e.g. v [kh,kw,I,O], axes (0,1,2) -> [O]."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(axes)))


def weight_norm(v, g, axes: Sequence[int], eps: float = 0.0):
  """g * v / (||v||_axes + eps); g broadcasts against the remaining (output) axes."""
  return v * (g / (norm(v, axes) + eps))
