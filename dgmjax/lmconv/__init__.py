"""LMConv (Jain, Abbeel & Pathak 2020): locally masked convolutions for any-order
autoregressive image models.

- ``orders``: generation orders (raster, s-curve, Hilbert, generalised Hilbert, their 8
  variants, user permutations, observed-first orders for completion).
- ``masks``: the per-location kernel masks an order induces.
- ``locally_masked_conv`` (re-exported from ``dgmjax.nn.shift_conv``): the pure
  masked-convolution function.
- ``network``: the official ``OurPixelCNN`` backbone in Flax (parameter tree documented:
  each stream's gated resnets stacked on a leading axis and run by the executor
  ``dgmjax.nn.repeat``).
- ``heads``: discretised logistic mixture, softmax and Bernoulli pixel distributions.
- ``sampling``: compiled sampling/completion (cached one-location-per-step, or naive).
- ``model``: ``LMConvModel``, the model protocol (``dgmjax.models.create("lmconv", ...)``).
- ``ensemble``: the order ensemble log (1/N) sum_k p_{pi_k}(x), the one implementation.
- ``completion``: observed regions (``observed_mask``), observed-first orders and
  completions of test images with the hidden region's conditional bits/dim.
- ``figures``: completion figures as PNG.
"""

from __future__ import annotations

from dgmjax.nn.shift_conv import locally_masked_conv
from dgmjax.lmconv.masks import kernel_masks, network_masks

__all__ = ["locally_masked_conv", "kernel_masks", "network_masks"]
