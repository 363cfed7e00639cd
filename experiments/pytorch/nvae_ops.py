"""Layers, cells and distributions of the project's PyTorch NVAE (CPU-runnable).

Written for parity tests and benchmarks against dgmjax; it follows the behaviour and
the ``state_dict`` names of NVlabs/NVAE (``neural_operations.py``,
``neural_ar_operations.py``, ``distributions.py``; Vahdat & Kautz, "NVAE: A Deep
Hierarchical Variational Autoencoder", NeurIPS 2020) without its CUDA-only pieces:
synchronised batch norm becomes ``nn.BatchNorm2d`` with the official momentum 0.05
and epsilon 1e-5, and Swish is ``x * sigmoid(x)``.

All tensors are NCHW. Parameter names that matter for checkpoints:
- ``Conv2D`` with weight normalisation stores ``weight`` [O,I/g,k,k] and
  ``log_weight_norm`` [O,1,1,1]; the kernel used is
  ``exp(log_weight_norm) * weight / (||weight||_2 + 1e-5)`` (norm over I,kh,kw).
  Without weight normalisation it registers ``weight_normalized`` as a second name of
  the same ``weight`` parameter, so both keys appear in the ``state_dict``.
- A synchronised BN of the official code is a wrapper whose inner layer is ``.bn``;
  a fused BN+Swish is the BN layer itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.05   # PyTorch convention: running = 0.95 * running + 0.05 * batch
CHANNEL_MULT = 2


def swish(x: torch.Tensor) -> torch.Tensor:
  """Swish / SiLU: x * sigmoid(x)."""
  return x * torch.sigmoid(x)


class Swish(nn.Module):
  def forward(self, x):
    return swish(x)


def soft_clamp5(x: torch.Tensor) -> torch.Tensor:
  """Differentiable clamp to (-5, 5): 5 tanh(x / 5)."""
  return 5.0 * torch.tanh(x / 5.0)


def weight_norm_kernel(log_weight_norm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
  """exp(lwn) * w / (||w|| + 1e-5), the norm taken per output channel over (I, kh, kw)."""
  wn = torch.sqrt(torch.sum(weight * weight, dim=[1, 2, 3])).view(-1, 1, 1, 1)
  return torch.exp(log_weight_norm) * weight / (wn + 1e-5)


class Conv2D(nn.Conv2d):
  """Weight-normalised 2-D convolution (NVAE's ``Conv2D``).

  ``data_init=True`` rescales the kernel and bias on the first call so that the
  output has zero mean and standard deviation 1/5 per channel (single process).
  """

  def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0, dilation=1, groups=1,
               bias=False, data_init=False, weight_norm=True):
    super().__init__(c_in, c_out, kernel_size, stride, padding, dilation, groups, bias)
    self.log_weight_norm = None
    if weight_norm:
      norm = torch.sqrt(torch.sum(self.weight.detach() ** 2, dim=[1, 2, 3])).view(-1, 1, 1, 1)
      self.log_weight_norm = nn.Parameter(torch.log(norm + 1e-2))
    else:
      self.weight_normalized = self.weight   # an alias: the official state_dict key
    self.data_init = data_init
    self.init_done = False

  def normalize_weight(self) -> torch.Tensor:
    if self.log_weight_norm is None:
      return self.weight
    return weight_norm_kernel(self.log_weight_norm, self.weight)

  def forward(self, x):
    if self.data_init and not self.init_done:
      with torch.no_grad():
        norm = torch.sqrt(torch.sum(self.weight ** 2, dim=[1, 2, 3])).view(-1, 1, 1, 1)
        out = F.conv2d(x, self.weight / (norm + 1e-5), None, self.stride, self.padding,
                       self.dilation, self.groups)
        mean = out.mean(dim=[0, 2, 3])
        std = 5 * out.std(dim=[0, 2, 3])
        if self.bias is not None:
          self.bias.data = -mean / (std + 1e-5)
        self.log_weight_norm.data = -torch.log(std.view(-1, 1, 1, 1) + 1e-5)
        self.init_done = True
    return F.conv2d(x, self.normalize_weight(), self.bias, self.stride, self.padding,
                    self.dilation, self.groups)


class BatchNormSwish(nn.BatchNorm2d):
  """BN followed by Swish in one layer (the official fused ``SyncBatchNormSwish``)."""

  def __init__(self, c):
    super().__init__(c, eps=BN_EPS, momentum=BN_MOMENTUM)

  def forward(self, x):
    return swish(super().forward(x))


class BatchNorm(nn.Module):
  """A plain BN kept under ``.bn`` (the official synchronised-BN wrapper's layout)."""

  def __init__(self, c):
    super().__init__()
    self.bn = nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)

  def forward(self, x):
    return self.bn(x)


class Identity(nn.Module):
  def forward(self, x):
    return x


class ELUConv(nn.Module):
  """ELU -> [nearest x2 up-sampling if stride == -1] -> WN conv with data init."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1):
    super().__init__()
    self.upsample = stride == -1
    self.conv_0 = Conv2D(c_in, c_out, k, abs(stride), padding, dilation, bias=True, data_init=True)

  def forward(self, x):
    out = F.elu(x)
    if self.upsample:
      out = F.interpolate(out, scale_factor=2, mode="nearest")
    return self.conv_0(out)


class BNELUConv(nn.Module):
  """BN -> ELU -> [up-sampling] -> WN conv."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1):
    super().__init__()
    self.upsample = stride == -1
    self.bn = BatchNorm(c_in)
    self.conv_0 = Conv2D(c_in, c_out, k, abs(stride), padding, dilation, bias=True)

  def forward(self, x):
    out = F.elu(self.bn(x))
    if self.upsample:
      out = F.interpolate(out, scale_factor=2, mode="nearest")
    return self.conv_0(out)


class BNSwishConv(nn.Module):
  """BN + Swish -> [up-sampling] -> WN conv (the encoder residual cell's unit)."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1):
    super().__init__()
    self.upsample = stride == -1
    self.bn_act = BatchNormSwish(c_in)
    self.conv_0 = Conv2D(c_in, c_out, k, abs(stride), padding, dilation, bias=True)

  def forward(self, x):
    out = self.bn_act(x)
    if self.upsample:
      out = F.interpolate(out, scale_factor=2, mode="nearest")
    return self.conv_0(out)


class ConvBNSwish(nn.Module):
  """Conv (no bias, no weight norm) -> BN + Swish, under ``.conv``."""

  def __init__(self, c_in, c_out, k=3, stride=1, groups=1, dilation=1):
    super().__init__()
    padding = dilation * (k - 1) // 2
    self.conv = nn.Sequential(
        Conv2D(c_in, c_out, k, stride, padding, dilation, groups, bias=False, weight_norm=False),
        BatchNormSwish(c_out))

  def forward(self, x):
    return self.conv(x)


class InvertedResidual(nn.Module):
  """The generative cell's unit: [up x2] BN, 1x1 expand + BN-Swish, depthwise kxk + BN-Swish,
  1x1 project, BN. stride: 1, 2 (depthwise conv strided) or -1 (nearest up-sampling first)."""

  def __init__(self, c_in, c_out, stride, ex, dil, k, g):
    super().__init__()
    if stride not in (1, 2, -1):
      raise ValueError(f"stride must be 1, 2 or -1; got {stride}")
    hidden = int(round(c_in * ex))
    groups = hidden if g == 0 else g
    layers = [nn.UpsamplingNearest2d(scale_factor=2)] if stride == -1 else []
    layers += [BatchNorm(c_in),
               ConvBNSwish(c_in, hidden, k=1),
               ConvBNSwish(hidden, hidden, stride=abs(stride), groups=groups, k=k, dilation=dil),
               Conv2D(hidden, c_out, 1, 1, 0, bias=False, weight_norm=False),
               BatchNorm(c_out)]
    self.conv = nn.Sequential(*layers)

  def forward(self, x):
    return self.conv(x)


# name -> (c_in, c_out, stride) -> module, as the official OPS table.
OPS = {
    "res_elu": lambda ci, co, s: ELUConv(ci, co, 3, s, 1),
    "res_bnelu": lambda ci, co, s: BNELUConv(ci, co, 3, s, 1),
    "res_bnswish": lambda ci, co, s: BNSwishConv(ci, co, 3, s, 1),
    "res_bnswish5": lambda ci, co, s: BNSwishConv(ci, co, 3, s, 2, 2),
    "mconv_e6k5g0": lambda ci, co, s: InvertedResidual(ci, co, s, ex=6, dil=1, k=5, g=0),
    "mconv_e3k5g0": lambda ci, co, s: InvertedResidual(ci, co, s, ex=3, dil=1, k=5, g=0),
    "mconv_e3k5g8": lambda ci, co, s: InvertedResidual(ci, co, s, ex=3, dil=1, k=5, g=8),
    "mconv_e6k11g0": lambda ci, co, s: InvertedResidual(ci, co, s, ex=6, dil=1, k=11, g=0),
}

_CELL_ROLES = ("normal_enc", "down_enc", "normal_dec", "up_dec", "normal_pre", "down_pre",
               "normal_post", "up_post")


def arch_cells(arch_instance: str) -> dict[str, list[str]]:
  """The operations of each cell role for the official ``--arch_instance`` names.

  ``res_mbconv`` (the official default): residual BN-Swish-conv pairs in the encoder and
  pre-processing, inverted residuals (x6 expansion; x3 in post-processing) elsewhere.
  """
  res = ["res_bnswish", "res_bnswish"]
  table = {
      "res_elu": dict.fromkeys(_CELL_ROLES, ["res_elu", "res_elu"]),
      "res_bnelu": dict.fromkeys(_CELL_ROLES, ["res_bnelu", "res_bnelu"]),
      "res_bnswish": dict.fromkeys(_CELL_ROLES, res),
      "mbconv_sep": {**dict.fromkeys(_CELL_ROLES[:4], ["mconv_e6k5g0"]),
                     **dict.fromkeys(_CELL_ROLES[4:], ["mconv_e3k5g0"])},
  }
  for name, enc in (("res_mbconv", res), ("res53_mbconv", ["res_bnswish5", "res_bnswish"]),
                    ("res35_mbconv", ["res_bnswish", "res_bnswish5"]),
                    ("res55_mbconv", ["res_bnswish5", "res_bnswish5"])):
    table[name] = {"normal_enc": enc, "down_enc": enc, "normal_pre": enc, "down_pre": enc,
                   "normal_dec": ["mconv_e6k5g0"], "up_dec": ["mconv_e6k5g0"],
                   "normal_post": ["mconv_e3k5g0"], "up_post": ["mconv_e3k5g0"]}
  if arch_instance not in table:
    raise ValueError(f"unknown arch_instance {arch_instance!r}; expected one of {sorted(table)}")
  cells = {k: list(v) for k, v in table[arch_instance].items()}
  cells["ar_nn"] = [""]
  return cells


def stride_for_cell_type(cell_type: str) -> int:
  if cell_type.startswith(("normal", "combiner")):
    return 1
  if cell_type.startswith("down"):
    return 2
  if cell_type.startswith("up"):
    return -1
  raise ValueError(f"unknown cell type {cell_type!r}")


class FactorizedReduce(nn.Module):
  """Swish, then four 1x1 stride-2 convs on the four pixel phases, concatenated."""

  def __init__(self, c_in, c_out):
    super().__init__()
    if c_out % 2:
      raise ValueError(f"FactorizedReduce needs an even c_out; got {c_out}")
    q = c_out // 4
    self.conv_1 = Conv2D(c_in, q, 1, stride=2, bias=True)
    self.conv_2 = Conv2D(c_in, q, 1, stride=2, bias=True)
    self.conv_3 = Conv2D(c_in, q, 1, stride=2, bias=True)
    self.conv_4 = Conv2D(c_in, c_out - 3 * q, 1, stride=2, bias=True)

  def forward(self, x):
    out = swish(x)
    return torch.cat([self.conv_1(out), self.conv_2(out[:, :, 1:, 1:]),
                      self.conv_3(out[:, :, :, 1:]), self.conv_4(out[:, :, 1:, :])], dim=1)


class UpSample(nn.Module):
  """Bilinear x2 up-sampling with align_corners=True (the up cells' skip path)."""

  def forward(self, x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def skip_connection(c, stride):
  if stride == 1:
    return Identity()
  if stride == 2:
    return FactorizedReduce(c, CHANNEL_MULT * c)
  return nn.Sequential(UpSample(), Conv2D(c, c // CHANNEL_MULT, kernel_size=1))


class SE(nn.Module):
  """Squeeze-and-excitation: x * sigmoid(W2 relu(W1 mean_hw(x))), hidden max(C/16, 4)."""

  def __init__(self, c_in, c_out):
    super().__init__()
    hidden = max(c_out // 16, 4)
    self.se = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True),
                            nn.Linear(hidden, c_out), nn.Sigmoid())

  def forward(self, x):
    return x * self.se(x.mean(dim=[2, 3]))[:, :, None, None]


class Cell(nn.Module):
  """A residual cell: skip(s) + 0.1 * SE(ops(s))."""

  def __init__(self, c_in, c_out, cell_type, arch, use_se):
    super().__init__()
    self.cell_type = cell_type
    stride = stride_for_cell_type(cell_type)
    self.skip = skip_connection(c_in, stride)
    self.use_se = use_se
    self._ops = nn.ModuleList(
        [OPS[p](c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
         for i, p in enumerate(arch)])
    if use_se:
      self.se = SE(c_out, c_out)

  def forward(self, s):
    skip = self.skip(s)
    for op in self._ops:
      s = op(s)
    if self.use_se:
      s = self.se(s)
    return skip + 0.1 * s


class EncCombinerCell(nn.Module):
  """x1 + conv1x1(x2): the encoder feature plus the projected decoder state."""

  def __init__(self, c_in1, c_in2, c_out, cell_type):
    super().__init__()
    self.cell_type = cell_type
    self.conv = Conv2D(c_in2, c_out, kernel_size=1, bias=True)

  def forward(self, x1, x2):
    return x1 + self.conv(x2)


class DecCombinerCell(nn.Module):
  """conv1x1([x1, x2]): the decoder state concatenated with the sampled latent."""

  def __init__(self, c_in1, c_in2, c_out, cell_type):
    super().__init__()
    self.cell_type = cell_type
    self.conv = Conv2D(c_in1 + c_in2, c_out, kernel_size=1, bias=True)

  def forward(self, x1, x2):
    return self.conv(torch.cat([x1, x2], dim=1))


# ---- autoregressive (IAF) cells -------------------------------------------------


def channel_mask(c_in, g_in, c_out, zero_diag) -> np.ndarray:
  """[c_out, c_in/g_in] connectivity of the centre tap: output block i sees inputs < i
  (<= i when zero_diag is False). Depthwise (g_in == c_in): all ones, or zeros."""
  if not (c_in % c_out == 0 or c_out % c_in == 0):
    raise ValueError(f"channel counts {c_in} and {c_out} must divide one another")
  if g_in == c_in:
    return np.full([c_out, 1], 0.0 if zero_diag else 1.0, np.float32)
  if g_in != 1:
    raise ValueError(f"masked conv supports groups 1 or c_in; got {g_in}")
  mask = np.ones([c_out, c_in], np.float32)
  if c_out >= c_in:
    r = c_out // c_in
    for i in range(c_in):
      mask[i * r:(i + 1) * r, i + (0 if zero_diag else 1):] = 0
  else:
    r = c_in // c_out
    for i in range(c_out):
      mask[i, (i + (0 if zero_diag else 1)) * r:] = 0
  return mask


def conv_mask(k, c_in, g_in, c_out, zero_diag, mirror) -> np.ndarray:
  """[c_out, c_in/g_in, k, k] raster-order mask: rows above the centre, the centre row left
  of the centre, and the centre tap by ``channel_mask``; ``mirror`` flips it spatially."""
  m = (k - 1) // 2
  mask = np.ones([c_out, c_in // g_in, k, k], np.float32)
  mask[:, :, m:, :] = 0
  mask[:, :, m, :m] = 1
  mask[:, :, m, m] = channel_mask(c_in, g_in, c_out, zero_diag)
  if mirror:
    mask = mask[:, :, ::-1, ::-1].copy()
  return mask


class ARConv2d(nn.Conv2d):
  """Masked, weight-normalised convolution (the mask is not part of the state_dict)."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, bias=False,
               masked=False, zero_diag=False, mirror=False):
    super().__init__(c_in, c_out, k, stride, padding, dilation, groups, bias)
    self.masked = masked
    if masked:
      if k % 2 != 1:
        raise ValueError(f"masked conv needs an odd kernel; got {k}")
      mask = torch.tensor(conv_mask(k, c_in, groups, c_out, zero_diag, mirror),
                          device=self.weight.device)
    else:
      mask = torch.ones((), device=self.weight.device)
    self.register_buffer("mask", mask, persistent=False)
    norm = torch.sqrt(torch.sum((self.weight.detach() * mask) ** 2, dim=[1, 2, 3]))
    self.log_weight_norm = nn.Parameter(torch.log(norm.view(-1, 1, 1, 1) + 1e-2))

  def normalize_weight(self) -> torch.Tensor:
    return weight_norm_kernel(self.log_weight_norm, self.weight * self.mask)

  def forward(self, x):
    return F.conv2d(x, self.normalize_weight(), self.bias, self.stride, self.padding,
                    self.dilation, self.groups)


class ARELUConv(nn.Module):
  """ELU -> masked WN conv whose initial norm is scaled by ``weight_init_coeff``."""

  def __init__(self, c_in, c_out, k, padding=0, dilation=1, masked=True, zero_diag=True,
               weight_init_coeff=1.0, mirror=False):
    super().__init__()
    self.conv_0 = ARConv2d(c_in, c_out, k, 1, padding, dilation, bias=True, masked=masked,
                           zero_diag=zero_diag, mirror=mirror)
    self.conv_0.log_weight_norm.data += math.log(weight_init_coeff)

  def forward(self, x):
    return self.conv_0(F.elu(x))


class ARInvertedResidual(nn.Module):
  """Masked 3x3 (x``ex`` channels, strictly causal) -> ELU -> masked depthwise kxk -> ELU."""

  def __init__(self, inz, inf, ex=6, dil=1, k=5, mirror=False):
    super().__init__()
    hidden = int(round(inz * ex))
    self.convz = nn.Sequential(
        ARConv2d(inz, hidden, 3, padding=1, masked=True, mirror=mirror, zero_diag=True),
        nn.ELU(inplace=True),
        ARConv2d(hidden, hidden, k, padding=dil * (k - 1) // 2, dilation=dil, groups=hidden,
                 masked=True, mirror=mirror, zero_diag=False),
        nn.ELU(inplace=True))
    self.hidden_dim = hidden

  def forward(self, z, ftr):
    del ftr   # the official cell ignores the encoder features
    return self.convz(z)


class CellAR(nn.Module):
  """Shift-only IAF step: z' = z - mu(z), mu autoregressive in z; log-det 0."""

  def __init__(self, num_z, num_ftr, num_c, mirror):
    super().__init__()
    self.cell_type = "ar_nn"
    self.conv = ARInvertedResidual(num_z, num_ftr, ex=6, mirror=mirror)
    self.mu = ARELUConv(self.conv.hidden_dim, num_z, 1, padding=0, masked=True, zero_diag=False,
                        weight_init_coeff=0.1, mirror=mirror)

  def forward(self, z, ftr):
    new_z = z - self.mu(self.conv(z, ftr))
    return new_z, torch.zeros_like(new_z)


class PairedCellAR(nn.Module):
  """Two IAF steps, the second with the spatially mirrored mask."""

  def __init__(self, num_z, num_ftr, num_c, arch=None):
    super().__init__()
    self.cell1 = CellAR(num_z, num_ftr, num_c, mirror=False)
    self.cell2 = CellAR(num_z, num_ftr, num_c, mirror=True)

  def forward(self, z, ftr):
    z, ld1 = self.cell1(z, ftr)
    z, ld2 = self.cell2(z, ftr)
    return z, ld1 + ld2


# ---- distributions ----------------------------------------------------------------


class Normal:
  """Diagonal normal with soft-clamped parameters: mu = 5 tanh(mu/5),
  sigma = (exp(5 tanh(log_sigma/5)) + 0.01) * temp."""

  def __init__(self, mu, log_sigma, temp=1.0):
    self.mu = soft_clamp5(mu)
    self.sigma = torch.exp(soft_clamp5(log_sigma)) + 1e-2
    if temp != 1.0:
      self.sigma = self.sigma * temp

  def sample(self, generator=None):
    eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype,
                      device=self.mu.device)
    return self.sample_given_eps(eps), eps

  def sample_given_eps(self, eps):
    return eps * self.sigma + self.mu

  def log_p(self, samples):
    z = (samples - self.mu) / self.sigma
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma)

  def kl(self, other: "Normal"):
    """Analytic KL(self || other), elementwise."""
    t1 = (self.mu - other.mu) / other.sigma
    t2 = self.sigma / other.sigma
    return 0.5 * (t1 * t1 + t2 * t2) - 0.5 - torch.log(t2)


class NormalDecoder:
  """Continuous normal output on [-1, 1] (``num_mixture_dec == 1``)."""

  def __init__(self, param, num_bits=8):
    del num_bits
    c = param.size(1) // 2
    self.dist = Normal(param[:, :c], param[:, c:])

  def log_prob(self, samples):
    return self.dist.log_p(2 * samples - 1.0)

  def sample(self, t=1.0, generator=None):
    x, _ = self.dist.sample(generator)
    return torch.clamp(x, -1, 1) / 2 + 0.5


class DiscMixLogistic:
  """Discretised mixture of logistics for RGB with linear channel dependence (PixelCNN++).

  param: [B, 10*M, H, W] = M mixture logits, then per channel (3) the M means, M log
  scales (clamped at -7) and M tanh coefficients. ``log_prob`` takes x in [0, 1] with
  2**num_bits levels and returns [B, H, W] (summed over channels and mixed).
  """

  def __init__(self, param, num_mix=10, num_bits=8):
    b, _, h, w = param.size()
    self.num_mix = num_mix
    self.logit_probs = param[:, :num_mix]
    rest = param[:, num_mix:].reshape(b, 3, 3 * num_mix, h, w)
    self.means = rest[:, :, :num_mix]
    self.log_scales = torch.clamp(rest[:, :, num_mix:2 * num_mix], min=-7.0)
    self.coeffs = torch.tanh(rest[:, :, 2 * num_mix:])
    self.max_val = 2.0 ** num_bits - 1

  def log_prob(self, samples):
    if samples.size(1) != 3:
      raise ValueError(f"DiscMixLogistic models RGB images; got {samples.size(1)} channels")
    x = (2 * samples - 1.0).unsqueeze(2)                       # B,3,1,H,W
    m = self.means
    mean_r = m[:, 0]
    mean_g = m[:, 1] + self.coeffs[:, 0] * x[:, 0]
    mean_b = m[:, 2] + self.coeffs[:, 1] * x[:, 0] + self.coeffs[:, 2] * x[:, 1]
    centered = x - torch.stack([mean_r, mean_g, mean_b], dim=1)  # B,3,M,H,W
    inv_s = torch.exp(-self.log_scales)
    plus_in = inv_s * (centered + 1.0 / self.max_val)
    min_in = inv_s * (centered - 1.0 / self.max_val)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - self.log_scales - 2.0 * F.softplus(mid_in)
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)),
                          log_pdf_mid - np.log(self.max_val / 2))
    x = x.expand_as(centered)
    log_probs = torch.where(x < -0.999, log_cdf_plus,
                            torch.where(x > 0.99, log_one_minus_cdf_min, log_mid))
    log_probs = log_probs.sum(1) + F.log_softmax(self.logit_probs, dim=1)  # B,M,H,W
    return torch.logsumexp(log_probs, dim=1)

  def _select(self, sel):
    sel = sel.unsqueeze(1)
    return ((self.means * sel).sum(2), (self.log_scales * sel).sum(2), (self.coeffs * sel).sum(2))

  @staticmethod
  def _chain(x, coeffs):
    r = torch.clamp(x[:, 0], -1, 1)
    g = torch.clamp(x[:, 1] + coeffs[:, 0] * r, -1, 1)
    b = torch.clamp(x[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g, -1, 1)
    return torch.stack([r, g, b], dim=1) / 2 + 0.5

  def sample(self, t=1.0, generator=None):
    """[B,3,H,W] in [0,1]: Gumbel-max component, logistic noise scaled by 1/t, not rounded."""
    def uniform(shape):
      u = torch.rand(shape, generator=generator, dtype=self.means.dtype, device=self.means.device)
      return u * (1 - 2e-5) + 1e-5
    gumbel = -torch.log(-torch.log(uniform(self.logit_probs.shape)))
    idx = torch.argmax(self.logit_probs / t + gumbel, dim=1)
    sel = F.one_hot(idx, self.num_mix).permute(0, 3, 1, 2).to(self.means.dtype)
    means, log_scales, coeffs = self._select(sel)
    u = uniform(means.shape)
    x = means + torch.exp(log_scales) / t * (torch.log(u) - torch.log(1.0 - u))
    return self._chain(x, coeffs)

  def mean(self):
    means, _, coeffs = self._select(torch.softmax(self.logit_probs, dim=1))
    return self._chain(means, coeffs)
