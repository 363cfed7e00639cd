"""Glow's coupling conditioner: the network NN(x_a) whose output parameterises the
coupling's elementwise transform (``dgmjax.flows.couplings.Coupling``), and its
convolutions.

    CouplingNet:  x_a [B,H,W,C/2] -> conv3x3 -> ReLU -> conv1x1 -> ReLU -> ZeroConv -> h [B,H,W,F]

with F = ``features`` (C for an affine coupling, [log_s', t]; C/2 for an additive one).
``ZeroConv`` (zero-initialised, learned output scale) is also the prior network of
``dgmjax.flows.priors``.

How they run is one ``dgmjax.nn.compute.Compute`` value (field ``compute``) handed down
by the model: its dtype for the arithmetic (the output stays float32) and its ``conv``
formulation for every 3x3 convolution (``Compute.conv_same``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import wide
from dgmjax.nn.compute import DEFAULT, Compute


def _border_taps(h: int, w: int) -> np.ndarray:
  """[h,w,3,3]: 1 where tap (i, j) of a 3x3 kernel centred on pixel (y, x) falls on the
  one-pixel padding of an h x w image, else 0."""
  ys = np.arange(h)[:, None, None, None] + np.arange(3)[None, None, :, None] - 1
  xs = np.arange(w)[None, :, None, None] + np.arange(3)[None, None, None, :] - 1
  outside = (ys < 0) | (ys >= h) | (xs < 0) | (xs >= w)
  return outside.astype(np.float32)


def conv3x3(x, kernel, padding: str = "zeros", compute: Compute = DEFAULT):
  """3x3 'same' convolution, x [B,H,W,I] -> [B,H,W,O], with the official paddings.

  ``padding``: ``"zeros"``; ``"ones"`` (rosinality/glow-pytorch ``ZeroConv2d`` pads with
  the value 1); ``"edge"`` (openai/glow ``add_edge_padding``: zeros plus an extra input
  channel that is 1 on the padding; ``kernel`` then has I+1 input channels).
  The padding's contribution does not depend on x, so "ones" and "edge" are computed
  exactly as a zero-padded convolution plus a border term
  sum_{taps on the padding} sum_c kernel[tap, c, :] ([H,W,O]); this keeps XLA on its
  fast convolution (a pad with value 1 fused into the convolution was measured ~40x
  slower on CPU). The zero-padded convolution runs as ``compute.conv_same`` (x cast
  to the compute dtype; ``compute.conv`` "auto" picks per backend and shape: on CPU the
  zero conv, width -> C, is one matmul and a shift-and-add, B16 14x14 512->4
  forward+backward 3.4 ms vs 5.5-7.6 ms for XLA's convolution, PyTorch 3.9 ms).
  """
  b, h, w, c = x.shape
  if padding == "edge":
    kernel, edge_k = kernel[:, :, :c, :], kernel[:, :, c, :]
  y = compute.conv_same(x, kernel)
  if padding == "zeros":
    return y
  if padding == "ones":
    edge_k = jnp.sum(kernel, axis=2)
  elif padding != "edge":
    raise ValueError(f"padding must be 'zeros', 'ones' or 'edge'; got {padding!r}")
  border = jnp.einsum("hwij,ijo->hwo", jnp.asarray(_border_taps(h, w)),
                      edge_k.astype(wide(y.dtype)))
  return y + border.astype(y.dtype)


class ZeroConv(nn.Module):
  """Zero-initialised 3x3 convolution with a learned output scale exp(3 * logs).

  out = (conv3x3(pad(x)) + bias) * exp(logscale_factor * logs). The padding is
  rosinality/glow-pytorch's ``ZeroConv2d`` (pad value 1; ``edge_bias=False``) or
  openai/glow's ``conv2d_zeros`` (zeros plus an edge-indicator channel).
  Parameters: ``kernel`` [3,3,I(+1),O], ``bias`` [O], ``logs`` [O]. The convolution runs
  as ``compute`` says; the result is float32 (float64 under x64).
  """
  features: int
  edge_bias: bool = False
  logscale_factor: float = 3.0
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1] + int(self.edge_bias)
    kernel = self.param("kernel", nn.initializers.zeros, (3, 3, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    logs = self.param("logs", nn.initializers.zeros, (self.features,))
    y = conv3x3(x, kernel, "edge" if self.edge_bias else "ones", self.compute)
    y = y.astype(wide(y.dtype)) + bias
    return y * jnp.exp(self.logscale_factor * logs)


class Conv3x3(nn.Module):
  """3x3 'same' convolution with ``conv3x3``'s paddings; kernel N(0, 0.05^2), bias 0;
  computed as ``compute`` says, in its dtype."""
  features: int
  use_bias: bool = True
  padding: str = "zeros"
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1] + int(self.padding == "edge")
    kernel = self.param("kernel", nn.initializers.normal(0.05), (3, 3, cin, self.features))
    y = conv3x3(x, kernel, self.padding, self.compute)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


class CouplingNet(nn.Module):
  """NN(x_a): conv3x3 -> ReLU -> conv1x1 -> ReLU -> ZeroConv (Glow's coupling network).

  x_a [B,H,W,I] -> h float32 [B,H,W,``features``]. ``net_actnorm`` (openai/glow): the two
  hidden convolutions have no bias and are each followed by a data-initialised ActNorm;
  otherwise they carry a bias (rosinality/glow-pytorch). Hidden weights start as
  N(0, 0.05^2), biases at 0; the last convolution starts at zero, so h = 0 at init.
  Computation runs in ``compute``'s dtype, the 3x3 convolutions in its ``conv``
  formulation; the result is float32. Submodules ``conv1``
  (``actnorm1``), ``conv2`` (``actnorm2``), ``zero_conv``.

  As a conditioner of ``Coupling``, ``features`` may be left None: the coupling sets it
  to the number of channels its transform needs.
  """
  width: int
  features: int | None = None
  net_actnorm: bool = False
  edge_bias: bool = False
  compute: Compute = DEFAULT

  def input_channels(self, params) -> int:
    """I, the channel count of x_a, read from existing parameters ``params`` of this net."""
    return int(params["conv1"]["kernel"].shape[2]) - int(self.edge_bias)

  @nn.compact
  def __call__(self, x):
    if self.features is None:
      raise ValueError("CouplingNet needs its output channel count: set features "
                       "(Coupling sets it when it is given the net as its conditioner)")
    init = nn.initializers.normal(0.05)
    h = Conv3x3(self.width, not self.net_actnorm, "edge" if self.edge_bias else "zeros",
                self.compute, name="conv1")(x)
    if self.net_actnorm:
      h = ActNorm(logscale_factor=3.0, name="actnorm1")(h)[0]
    h = nn.relu(h)
    h = nn.Dense(self.width, use_bias=not self.net_actnorm, kernel_init=init,
                 dtype=self.compute.jnp_dtype, name="conv2")(h)
    if self.net_actnorm:
      h = ActNorm(logscale_factor=3.0, name="actnorm2")(h)[0]
    h = nn.relu(h)
    return ZeroConv(self.features, self.edge_bias, compute=self.compute, name="zero_conv")(h)
