"""Layers and cells of the project's PyTorch NVAE (CPU-runnable).

Written for parity tests and benchmarks against dgmjax; it follows the behaviour and
the ``state_dict`` names of NVlabs/NVAE (``neural_operations.py``; Vahdat & Kautz, "NVAE:
A Deep Hierarchical Variational Autoencoder", NeurIPS 2020) without its CUDA-only pieces:
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

The autoregressive (IAF) cells are in ``nvae_iaf.py``, the distributions in
``nvae_distributions.py``, the model in ``nvae.py``.
"""

from __future__ import annotations

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
