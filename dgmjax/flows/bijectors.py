"""Glow's bijector protocol and what every bijector shares (Kingma & Dhariwal 2018).

Every bijector maps images ``x: float [B,H,W,C]`` (NHWC) and has

    forward_and_log_det(x) -> (y, log_det[B])    # data -> latent
    inverse_and_log_det(y) -> (x, log_det[B])    # latent -> data, log_det = -forward's

so it can be used as a pure function:

    layer = ActNorm()
    variables = layer.init(rng, x, method=layer.forward_and_log_det)   # data-dependent init
    y, ld = layer.apply(variables, x, method=layer.forward_and_log_det)

``log_det`` is log|det dy/dx| summed over the whole image, float32 (float64 for float64
inputs under ``jax_enable_x64``). Modules that hold data-dependent initialisation
(ActNorm) initialise from the batch passed to ``init`` through the forward direction;
called in the inverse direction at init they start as the identity. Fixed (non-trained)
arrays, such as the permutation of the LU 1x1 convolution, live in the ``constants``
collection.

The bijectors themselves live beside this module:

- ``actnorm``: ``ActNorm`` (per-channel affine, data-dependent init);
- ``permutations``: ``InvConv1x1``, ``InvConv1x1LU``, ``Permute`` (reverse, shuffle);
- ``squeeze``: ``squeeze2d`` / ``unsqueeze2d`` and the ``Squeeze`` / ``Unsqueeze`` layers;
- ``couplings``: ``Coupling`` (affine or additive), which takes its conditioner network;
- ``conditioners``: Glow's conditioner ``CouplingNet`` and its convolutions.

Here: the ``Bijector`` base, ``Chain`` (composition) and the shape/dtype helpers.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

CONSTANTS = "constants"


def check_nhwc(x, layer: str, channels: int | None = None, even_spatial: bool = False,
               even_channels: bool = False):
  """Validates a float NHWC batch for ``layer``; returns (B, H, W, C). ValueError if not."""
  shape = getattr(x, "shape", None)
  want_c = "C" if channels is None else str(channels)
  if shape is None or len(shape) != 4:
    raise ValueError(f"{layer} expects an array of shape [B,H,W,{want_c}]; got shape {shape}")
  b, h, w, c = shape
  if channels is not None and c != channels:
    raise ValueError(f"{layer} expects shape [B,H,W,{channels}] (its parameters were built "
                     f"for {channels} channels); got {tuple(shape)}")
  if even_spatial and (h % 2 or w % 2):
    raise ValueError(f"{layer} expects even H and W, shape [B,2h,2w,C]; got {tuple(shape)}")
  if even_channels and c % 2:
    raise ValueError(f"{layer} expects an even channel count, shape [B,H,W,2c]; got "
                     f"{tuple(shape)}")
  return b, h, w, c


def known_channels(module: nn.Module, collection: str, name: str) -> int | None:
  """The channel count fixed by an existing variable (last axis), or None before init."""
  if module.has_variable(collection, name):
    return int(module.get_variable(collection, name).shape[-1])
  return None


def wide(dtype):
  """float32 for bfloat16/float16/float32 and float64 for float64 (under ``jax_enable_x64``):
  the precision of the flow's main path and of the coupling network's output."""
  return jnp.promote_types(dtype, jnp.float32)


def broadcast_logdet(value, batch: int, dtype=jnp.float32):
  """[batch] log-dets in ``wide(dtype)``: float32, or float64 for float64 inputs."""
  return jnp.broadcast_to(jnp.asarray(value, wide(dtype)), (batch,))


class Bijector(nn.Module):
  """Base: subclasses implement ``__call__(x, inverse=False) -> (out, log_det[B])``."""

  def forward_and_log_det(self, x):
    return self(x, False)

  def inverse_and_log_det(self, y):
    return self(y, True)


class Chain(Bijector):
  """Composition: forward applies ``layers`` in order, inverse in reverse order;
  log-dets add up. ``Chain((ActNorm(), InvConv1x1LU(), Coupling(width=64)))`` is one
  Glow step of flow."""
  layers: Sequence[nn.Module] = ()

  def __call__(self, x, inverse=False):
    log_det = jnp.zeros((x.shape[0],), jnp.float32)
    for layer in (reversed(self.layers) if inverse else self.layers):
      x, ld = layer(x, inverse)
      log_det = log_det + ld
    return x, log_det
