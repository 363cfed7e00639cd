"""Layers more than one model uses, as pure functions.

- ``shift_conv``: the matmul + masked shift-and-add convolution core (LMConv's locally
  masked convolution, Glow's 3x3 convolutions).
- ``depthwise``: the depthwise convolution with its hand-written VJP (NVAE).
- ``weight_norm``: weight normalisation in both official parameterisations.
- ``init``: PyTorch-style initialisers and fast init-time keys.

No model package imports another model package: what two of them share lives here.
"""
