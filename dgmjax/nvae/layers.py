"""NVAE's layers as Flax Linen modules (Vahdat & Kautz 2020, NVlabs/NVAE
``neural_operations.py``, ``neural_ar_operations.py``), NHWC.

Layouts (the PyTorch importer maps these one to one):

- ``WNConv``: the official weight-normalised ``Conv2D``. Params ``kernel`` [kh,kw,I/g,O]
  (PyTorch ``weight`` [O,I/g,kh,kw] transposed (2,3,1,0)), ``bias`` [O] (when used) and
  ``log_weight_norm`` [O] (PyTorch [O,1,1,1]); the effective kernel is

      w_eff = exp(log_weight_norm) * w / (||w||_(kh,kw,I) + 1e-5),

  initialised so that ``w_eff == w`` up to 1e-2: ``log_weight_norm = log(||w|| + 1e-2)``.
  With ``weight_norm=False`` (official ``Conv2D(..., weight_norm=False)``, whose
  ``weight_normalized`` merely aliases ``weight``) only ``kernel`` is stored.
- ``BatchNorm``: ``scale``/``bias`` params, ``mean``/``var`` in ``batch_stats``
  (PyTorch ``weight``/``bias``/``running_mean``/``running_var``); eps 1e-5, PyTorch
  momentum 0.05 (``running = 0.95 running + 0.05 batch``, the variance unbiased), batch
  statistics normalise in training, running statistics otherwise; the running statistics
  change only when ``train=True`` (and not while initialising).
- Every convolution, weight-normalised or not, ``sow``s its effective kernel as the
  matrix [O, I/g*kh*kw] (PyTorch's ``weight.view(O, -1)`` order) into the collection
  ``"spectral_weights"`` when that collection is mutable: the spectral regulariser
  (``dgmjax.nvae.regularizers``) needs exactly the weights used by the forward pass.

Every module takes the network's one ``compute`` value (``dgmjax.nn.compute.Compute``):
its dtype is the arithmetic's (BN statistics, parameters and likelihoods stay float32);
the 5x5 depthwise convolutions run by ``compute.depthwise_conv`` (``compute.depthwise``,
default ``"auto"``: on CPU 25 shifted multiply-adds, on GPU/TPU XLA's grouped
convolution) and the stride-1 'same' k x k convolutions (k > 1: the encoder cells' 3x3,
the stem, the samplers, the IAF cells' first conv, the output conv) by
``compute.conv_same`` (``compute.conv``, default ``"auto"``: XLA's convolution on
GPU/TPU; on CPU the matmul formulations, which XLA:CPU runs fast inside the groups' scan
loops too, where it puts the derived backward convolutions on a slow generic path).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nn.init import torch_uniform
from dgmjax.nn.weight_norm import weight_norm

BN_EPS = 1e-5
BN_MOMENTUM = 0.05        # PyTorch convention: weight of the new batch statistic
SPECTRAL_COLLECTION = "spectral_weights"


def swish(x):
  return x * jax.nn.sigmoid(x)


def kernel_matrix(kernel):
  """HWIO kernel [kh,kw,I,O] -> [O, I*kh*kw] in PyTorch's ``weight.view(O, -1)`` order."""
  return jnp.transpose(kernel, (3, 2, 0, 1)).reshape(kernel.shape[3], -1)


def weight_normalize(kernel, log_weight_norm):
  """exp(lwn) * w / (||w|| + 1e-5), the norm per output channel over (kh, kw, I)."""
  return weight_norm(kernel, jnp.exp(log_weight_norm), (0, 1, 2), eps=1e-5)


class WNConv(nn.Module):
  """Official ``Conv2D``: optional weight normalisation, PyTorch init, NHWC.

  ``mask`` (HWIO numpy array or None) multiplies the kernel before normalising
  (the autoregressive ``ARConv2d``); ``groups == features`` is a depthwise convolution.
  ``init_log_scale`` is added to the initial ``log_weight_norm`` (ARELUConv's 0.1 init).
  A 1x1 stride-1 convolution runs as the matmul x[B,H,W,I] @ W[I,O] (XLA's convolution
  backward relayouts kernel and activations every step; experiments/results/HISTORY.md).
  """
  features: int
  kernel_size: int = 1
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  groups: int = 1
  use_bias: bool = False
  weight_norm: bool = True
  mask: Any = None
  init_log_scale: float = 0.0
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    k = self.kernel_size
    if cin % self.groups:
      raise ValueError(f"input channels {cin} not divisible by groups {self.groups}")
    fan_in = (cin // self.groups) * k * k
    bound = 1.0 / np.sqrt(fan_in)
    kernel = self.param("kernel", torch_uniform(bound), (k, k, cin // self.groups, self.features))
    mask = None if self.mask is None else jnp.asarray(self.mask, jnp.float32)
    if mask is not None:
      kernel = kernel * mask
    if self.weight_norm:
      w0 = kernel
      lwn = self.param(
          "log_weight_norm",
          lambda _: jnp.log(jnp.sqrt(jnp.sum(w0 * w0, axis=(0, 1, 2))) + 1e-2)
          + self.init_log_scale)
      kernel = weight_normalize(kernel, lwn)
    self.sow(SPECTRAL_COLLECTION, "w", kernel_matrix(kernel))
    cm = self.compute
    x, kernel = cm.cast(x), cm.cast(kernel)
    if self.groups == cin and self.groups == self.features and self.groups > 1 and self.stride == 1:
      taps = None if self.mask is None else [tuple(t) for t in np.argwhere(
          np.any(np.asarray(self.mask) != 0, axis=(2, 3)))]
      y = cm.depthwise_conv(x, kernel, self.padding, self.dilation, taps)
    elif k == 1 and self.stride == 1 and self.groups == 1 and self.padding == 0:
      y = jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])
    elif (k % 2 and self.stride == 1 and self.groups == 1 and self.dilation == 1
          and self.padding == k // 2):
      y = cm.conv_same(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (self.stride, self.stride), [(self.padding, self.padding)] * 2,
          rhs_dilation=(self.dilation, self.dilation),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)
    if self.use_bias:
      bias = self.param("bias", torch_uniform(bound), (self.features,))
      y = y + cm.cast(bias)
    return y


class BatchNorm(nn.Module):
  """PyTorch-style BatchNorm2d (eps 1e-5, momentum 0.05), optionally followed by Swish
  (the official ``SyncBatchNormSwish``). Statistics are computed in float32."""
  act: bool = False
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    xf = x.astype(jnp.float32)
    if train:
      mean = jnp.mean(xf, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
      if not self.is_initializing():
        n = xf.shape[0] * xf.shape[1] * xf.shape[2]
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (1 - BN_MOMENTUM) * ra_mean.value + BN_MOMENTUM * mean
        ra_var.value = (1 - BN_MOMENTUM) * ra_var.value + BN_MOMENTUM * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (xf - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + bias
    if self.act:
      y = swish(y)
    return self.compute.cast(y)


class SE(nn.Module):
  """Squeeze-and-excitation: x * sigmoid(W2 relu(W1 mean_hw(x))), hidden max(C/16, 4).
  Params ``se_0`` and ``se_2`` (official ``se.se.0``/``se.se.2`` Linear; kernel [in,out])."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    hidden = max(c // 16, 4)
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    s = nn.Dense(hidden, name="se_0", kernel_init=torch_uniform(1 / np.sqrt(c)),
                 bias_init=torch_uniform(1 / np.sqrt(c)))(s)
    s = nn.relu(s)
    s = nn.Dense(c, name="se_2", kernel_init=torch_uniform(1 / np.sqrt(hidden)),
                 bias_init=torch_uniform(1 / np.sqrt(hidden)))(s)
    s = jax.nn.sigmoid(s)
    return x * s[:, None, None, :].astype(x.dtype)


class FactorizedReduce(nn.Module):
  """Down-sampling skip: swish, then four stride-2 1x1 convs on the input shifted by
  (0,0), (1,1), (0,1), (1,0) pixels, concatenated: C_out/4 channels each (the last takes
  the remainder). Submodules ``conv_1``..``conv_4`` as official."""
  features: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    if self.features % 2:
      raise ValueError(f"FactorizedReduce needs an even output width; got {self.features}")
    q = self.features // 4
    out = swish(x)
    conv = lambda n, name: WNConv(n, 1, stride=2, use_bias=True, compute=self.compute,
                                  name=name)
    return jnp.concatenate([conv(q, "conv_1")(out),
                            conv(q, "conv_2")(out[:, 1:, 1:, :]),
                            conv(q, "conv_3")(out[:, :, 1:, :]),
                            conv(self.features - 3 * q, "conv_4")(out[:, 1:, :, :])], axis=-1)


def _bilinear_matrix(n_in: int, n_out: int):
  """[n_out, n_in] interpolation weights of bilinear resizing with align_corners=True."""
  m = np.zeros((n_out, n_in), np.float32)
  if n_in == 1:
    m[:, 0] = 1.0
    return m
  pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
  frac = pos - lo
  m[np.arange(n_out), lo] = 1.0 - frac
  m[np.arange(n_out), lo + 1] += frac
  return m


def upsample_bilinear(x):
  """x2 bilinear up-sampling with align_corners=True (official ``UpSample``)."""
  mh = jnp.asarray(_bilinear_matrix(x.shape[1], 2 * x.shape[1]), x.dtype)
  mw = jnp.asarray(_bilinear_matrix(x.shape[2], 2 * x.shape[2]), x.dtype)
  return jnp.einsum("ph,bhwc,qw->bpqc", mh, x, mw)


def upsample_nearest(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UpSkip(nn.Module):
  """Up-sampling skip: bilinear x2 then a bias-free 1x1 WNConv (official ``skip.1``);
  the conv is named ``conv`` here."""
  features: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    return WNConv(self.features, 1, use_bias=False, compute=self.compute, name="conv")(
        upsample_bilinear(x))


class BNSwishConv(nn.Module):
  """Official ``BNSwishConv``: ``bn_act`` (BN + Swish) then ``conv_0`` (3x3 WNConv, bias)."""
  features: int
  stride: int = 1
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, train: bool):
    x = BatchNorm(act=True, compute=self.compute, name="bn_act")(x, train)
    return WNConv(self.features, 3, stride=self.stride, padding=1, use_bias=True,
                  compute=self.compute, name="conv_0")(x)


class ConvBNSwish(nn.Module):
  """Official ``ConvBNSwish``: ``conv`` (no weight norm, no bias) then ``bn`` (BN+Swish)."""
  features: int
  kernel_size: int = 1
  groups: int = 1
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, train: bool):
    x = WNConv(self.features, self.kernel_size, padding=(self.kernel_size - 1) // 2,
               groups=self.groups, use_bias=False, weight_norm=False, compute=self.compute,
               name="conv")(x)
    return BatchNorm(act=True, compute=self.compute, name="bn")(x, train)
