"""Glow's bijectors as Flax Linen modules (Kingma & Dhariwal 2018, openai/glow).

Every bijector maps images ``x: float [B,H,W,C]`` (NHWC) and has

    forward_and_log_det(x) -> (y, log_det[B])    # data -> latent
    inverse_and_log_det(y) -> (x, log_det[B])    # latent -> data, log_det = -forward's

so it can be used as a pure function:

    layer = ActNorm()
    variables = layer.init(rng, x, method=layer.forward_and_log_det)   # data-dependent init
    y, ld = layer.apply(variables, x, method=layer.forward_and_log_det)

``log_det`` is log|det dy/dx| summed over the whole image, float32 (float64 for float64
inputs under ``jax_enable_x64``). Modules that hold
data-dependent initialisation (ActNorm) initialise from the batch passed to ``init``
through the forward direction; called in the inverse direction at init they start as
the identity. Fixed (non-trained) arrays, such as the permutation of the LU 1x1
convolution, live in the ``constants`` collection.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.nn.shift_conv import locally_masked_conv

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


def _known_channels(module: nn.Module, collection: str, name: str) -> int | None:
  """The channel count fixed by an existing variable (last axis), or None before init."""
  if module.has_variable(collection, name):
    return int(module.get_variable(collection, name).shape[-1])
  return None


def _wide(dtype):
  """float32 for bfloat16/float16/float32 and float64 for float64 (under ``jax_enable_x64``):
  the precision of the flow's main path and of the coupling network's output."""
  return jnp.promote_types(dtype, jnp.float32)


def _broadcast_logdet(value, batch: int, dtype=jnp.float32):
  """[batch] log-dets in ``_wide(dtype)``: float32, or float64 for float64 inputs."""
  return jnp.broadcast_to(jnp.asarray(value, _wide(dtype)), (batch,))


class Bijector(nn.Module):
  """Base: subclasses implement ``__call__(x, inverse=False) -> (out, log_det[B])``."""

  def forward_and_log_det(self, x):
    return self(x, False)

  def inverse_and_log_det(self, y):
    return self(y, True)


class ActNorm(Bijector):
  """Per-channel affine normalisation with data-dependent initialisation.

  forward:  y = (x + loc) * s,      inverse: x = y / s - loc,
  log_det = H * W * sum_c log|s_c|.

  ``s`` is the parameter ``scale`` (rosinality/glow-pytorch) or, when
  ``logscale_factor`` is set, ``s = exp(logscale_factor * logs)`` with the parameter
  ``logs`` (openai/glow, factor 3). At init on a batch x: loc = -mean(x), s = 1/(std(x)
  + eps) per channel over (B,H,W), so the output has zero mean and unit variance.
  """
  logscale_factor: float | None = None
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "ActNorm", _known_channels(self, "params", "loc"))
    x32 = x.astype(_wide(x.dtype))
    if self.is_initializing() and not inverse:
      mean = jnp.mean(x32, axis=(0, 1, 2))
      std = jnp.sqrt(jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2)))
      inv_std = 1.0 / (std + self.eps)
    else:
      mean, inv_std = jnp.zeros((c,), jnp.float32), jnp.ones((c,), jnp.float32)
    loc = self.param("loc", lambda _: -mean)
    if self.logscale_factor is None:
      scale = self.param("scale", lambda _: inv_std)
      log_abs = jnp.log(jnp.abs(scale))
    else:
      logs = self.param("logs", lambda _: jnp.log(inv_std) / self.logscale_factor)
      log_abs = logs * self.logscale_factor
      scale = jnp.exp(log_abs)
    log_det = _broadcast_logdet(h * w * jnp.sum(log_abs), b, x.dtype)
    if inverse:
      return (x32 / scale - loc).astype(x.dtype), -log_det
    return ((x32 + loc) * scale).astype(x.dtype), log_det


def random_rotation(rng, c: int) -> jax.Array:
  """An orthogonal [c,c] matrix: Q of the QR decomposition of a standard normal matrix."""
  q, _ = jnp.linalg.qr(jax.random.normal(rng, (c, c), jnp.float32))
  return q


def _apply_1x1(x, w):
  """y[..., o] = sum_i w[o, i] x[..., i]: a 1x1 convolution with a PyTorch-layout [O,I] kernel."""
  return jnp.einsum("bhwi,oi->bhwo", x, w.astype(x.dtype))


class InvConv1x1(Bijector):
  """Invertible 1x1 convolution with a plain weight W [C,C] (initialised as a rotation).

  forward: y = W x per pixel; inverse: x = W^-1 y; log_det = H * W_img * log|det W|.
  log|det W| comes from ``jnp.linalg.slogdet`` (LU with partial pivoting). openai/glow
  evaluates it in float64; here it is float64 when ``jax_enable_x64`` is on and float32
  otherwise, which is accurate to ~1e-6 relative for the well-conditioned W a Glow
  learns (use ``InvConv1x1LU`` when exactness matters: its log-det is a plain sum).
  """

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "InvConv1x1", _known_channels(self, "params", "weight"))
    weight = self.param("weight", lambda rng: random_rotation(rng, c))
    wide = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    logabsdet = jnp.linalg.slogdet(weight.astype(wide))[1].astype(_wide(x.dtype))
    log_det = _broadcast_logdet(h * w * logabsdet, b, x.dtype)
    if inverse:
      return _apply_1x1(x, jnp.linalg.inv(weight)), -log_det
    return _apply_1x1(x, weight), log_det


class InvConv1x1LU(Bijector):
  """Invertible 1x1 convolution in the LU parameterisation (Glow paper, section 3.2).

  W = P L (U + diag(sign * exp(log_s))), with P a fixed permutation (constant ``w_p``),
  L unit lower triangular (parameter ``w_l``, strict lower part used), U strictly upper
  (``w_u``), ``s_sign`` fixed (constant) and ``w_s = log|s|`` trained; initialised from
  the LU decomposition of a random rotation. log_det = H * W_img * sum(w_s), exact and
  cheap. Names follow rosinality/glow-pytorch's ``InvConv2dLU``.
  """

  @nn.compact
  def __call__(self, x, inverse=False):
    b, h, w, c = check_nhwc(x, "InvConv1x1LU", _known_channels(self, "params", "w_s"))
    if self.is_initializing():
      p, l, u = jax.scipy.linalg.lu(random_rotation(self.make_rng("params"), c))
      diag = jnp.diag(u)
    else:
      p = l = u = jnp.eye(c, dtype=jnp.float32)
      diag = jnp.ones((c,), jnp.float32)
    w_p = self.variable(CONSTANTS, "w_p", lambda: p).value
    s_sign = self.variable(CONSTANTS, "s_sign", lambda: jnp.sign(diag)).value
    w_l = self.param("w_l", lambda _: l)
    w_u = self.param("w_u", lambda _: jnp.triu(u, 1))
    w_s = self.param("w_s", lambda _: jnp.log(jnp.abs(diag)))
    lower = jnp.tril(w_l, -1) + jnp.eye(c, dtype=w_l.dtype)
    upper = jnp.triu(w_u, 1) + jnp.diag(s_sign * jnp.exp(w_s))
    log_det = _broadcast_logdet(h * w * jnp.sum(w_s), b, x.dtype)
    if inverse:
      # W^-1 = U^-1 L^-1 P^T with triangular solves (no general inverse).
      eye = jnp.eye(c, dtype=jnp.float32)
      l_inv = jax.scipy.linalg.solve_triangular(lower, eye, lower=True, unit_diagonal=True)
      u_inv = jax.scipy.linalg.solve_triangular(upper, eye, lower=False)
      return _apply_1x1(x, u_inv @ l_inv @ w_p.T), -log_det
    return _apply_1x1(x, w_p @ lower @ upper), log_det


def permutation_indices(mode: str, seed: int, c: int) -> np.ndarray:
  """int [c]: y[..., i] = x[..., perm[i]] for ``Permute(mode, seed)``."""
  if mode == "reverse":
    return np.arange(c)[::-1].copy()
  if mode == "shuffle":
    return np.random.RandomState(seed).permutation(c)
  raise ValueError(f"Permute mode must be 'reverse' or 'shuffle'; got {mode!r}")


class Permute(Bijector):
  """A fixed channel permutation: ``"reverse"`` (openai/glow's default ablation) or a
  ``"shuffle"`` drawn once from ``numpy.random.RandomState(seed)``. log_det = 0.
  """
  mode: str = "reverse"
  seed: int = 0

  def permutation(self, c: int) -> np.ndarray:
    return permutation_indices(self.mode, self.seed, c)

  def __call__(self, x, inverse=False, perm=None):
    """``perm``: an optional int [C] array (may be traced, e.g. one row of a scan's
    per-step permutations) used instead of ``permutation(C)``."""
    b, _, _, c = check_nhwc(x, "Permute")
    if perm is None:
      perm = self.permutation(c)
      if inverse:
        perm = np.argsort(perm)
    elif inverse:
      perm = jnp.zeros_like(perm).at[perm].set(jnp.arange(c, dtype=perm.dtype))
    return jnp.take(x, perm, axis=-1), jnp.zeros((b,), jnp.float32)


def squeeze2d(x):
  """[B,H,W,C] -> [B,H/2,W/2,4C]; output channel c*4 + 2*dh + dw (openai/glow, rosinality)."""
  b, h, w, c = check_nhwc(x, "squeeze", even_spatial=True)
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze2d(x):
  """Inverse of ``squeeze2d``: [B,H,W,4C] -> [B,2H,2W,C]."""
  b, h, w, c4 = check_nhwc(x, "unsqueeze")
  if c4 % 4:
    raise ValueError(f"unsqueeze expects a channel count divisible by 4, shape [B,H,W,4c]; "
                     f"got {tuple(x.shape)}")
  c = c4 // 4
  x = x.reshape(b, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
  """Space-to-depth by 2: forward ``squeeze2d``, inverse ``unsqueeze2d``; log_det = 0."""

  def __call__(self, x, inverse=False):
    out = unsqueeze2d(x) if inverse else squeeze2d(x)
    return out, jnp.zeros((x.shape[0],), jnp.float32)


class Unsqueeze(Bijector):
  """Depth-to-space by 2: forward ``unsqueeze2d``, inverse ``squeeze2d``; log_det = 0."""

  def __call__(self, x, inverse=False):
    out = squeeze2d(x) if inverse else unsqueeze2d(x)
    return out, jnp.zeros((x.shape[0],), jnp.float32)


# ---------------------------------------------------------------- coupling network

def _border_taps(h: int, w: int) -> np.ndarray:
  """[h,w,3,3]: 1 where tap (i, j) of a 3x3 kernel centred on pixel (y, x) falls on the
  one-pixel padding of an h x w image, else 0."""
  ys = np.arange(h)[:, None, None, None] + np.arange(3)[None, None, :, None] - 1
  xs = np.arange(w)[None, :, None, None] + np.arange(3)[None, None, None, :] - 1
  outside = (ys < 0) | (ys >= h) | (xs < 0) | (xs >= w)
  return outside.astype(np.float32)


def conv3x3(x, kernel, padding: str = "zeros"):
  """3x3 'same' convolution, x [B,H,W,I] -> [B,H,W,O], with the official paddings.

  ``padding``: ``"zeros"``; ``"ones"`` (rosinality/glow-pytorch ``ZeroConv2d`` pads with
  the value 1); ``"edge"`` (openai/glow ``add_edge_padding``: zeros plus an extra input
  channel that is 1 on the padding; ``kernel`` then has I+1 input channels).
  The padding's contribution does not depend on x, so "ones" and "edge" are computed
  exactly as a zero-padded convolution plus a border term
  sum_{taps on the padding} sum_c kernel[tap, c, :] ([H,W,O]); this keeps XLA on its
  fast convolution (a pad with value 1 fused into the convolution was measured ~40x
  slower on CPU).
  """
  b, h, w, c = x.shape
  if padding == "edge":
    kernel, edge_k = kernel[:, :, :c, :], kernel[:, :, c, :]
  if kernel.shape[3] < kernel.shape[2]:
    # Few outputs from many inputs (the zero conv width -> C): one matmul
    # x[BHW,I] @ W[I,9*O] and a shift-and-add of the nine output slices beats XLA's CPU
    # convolution here (B16 14x14 512->4 forward+backward: 3.4 ms vs 5.5-7.6 ms, PyTorch
    # 3.9 ms), as for LMConv's layer (``locally_masked_conv`` without a mask).
    y = locally_masked_conv(x, kernel.astype(x.dtype))
  else:
    y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if padding == "zeros":
    return y
  if padding == "ones":
    edge_k = jnp.sum(kernel, axis=2)
  elif padding != "edge":
    raise ValueError(f"padding must be 'zeros', 'ones' or 'edge'; got {padding!r}")
  border = jnp.einsum("hwij,ijo->hwo", jnp.asarray(_border_taps(h, w)),
                      edge_k.astype(_wide(y.dtype)))
  return y + border.astype(y.dtype)


class ZeroConv(nn.Module):
  """Zero-initialised 3x3 convolution with a learned output scale exp(3 * logs).

  out = (conv3x3(pad(x)) + bias) * exp(logscale_factor * logs). The padding is
  rosinality/glow-pytorch's ``ZeroConv2d`` (pad value 1; ``edge_bias=False``) or
  openai/glow's ``conv2d_zeros`` (zeros plus an edge-indicator channel).
  """
  features: int
  edge_bias: bool = False
  logscale_factor: float = 3.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1] + int(self.edge_bias)
    kernel = self.param("kernel", nn.initializers.zeros, (3, 3, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    logs = self.param("logs", nn.initializers.zeros, (self.features,))
    y = conv3x3(x.astype(self.dtype), kernel, "edge" if self.edge_bias else "ones")
    y = y.astype(_wide(self.dtype)) + bias
    return y * jnp.exp(self.logscale_factor * logs)


class Conv3x3(nn.Module):
  """3x3 'same' convolution with ``conv3x3``'s paddings; kernel N(0, 0.05^2), bias 0."""
  features: int
  use_bias: bool = True
  padding: str = "zeros"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1] + int(self.padding == "edge")
    kernel = self.param("kernel", nn.initializers.normal(0.05), (3, 3, cin, self.features))
    y = conv3x3(x.astype(self.dtype), kernel, self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(y.dtype)
    return y


class CouplingNet(nn.Module):
  """NN(x_a): conv3x3 -> ReLU -> conv1x1 -> ReLU -> ZeroConv (Glow's coupling network).

  ``net_actnorm`` (openai/glow): the two hidden convolutions have no bias and are each
  followed by a data-initialised ActNorm; otherwise they carry a bias
  (rosinality/glow-pytorch). Hidden weights start as N(0, 0.05^2), biases at 0.
  Computation runs in ``dtype``; the result is float32.
  """
  width: int
  features: int
  net_actnorm: bool = False
  edge_bias: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(0.05)
    h = Conv3x3(self.width, not self.net_actnorm, "edge" if self.edge_bias else "zeros",
                self.dtype, name="conv1")(x)
    if self.net_actnorm:
      h = ActNorm(logscale_factor=3.0, name="actnorm1")(h)[0]
    h = nn.relu(h)
    h = nn.Dense(self.width, use_bias=not self.net_actnorm, kernel_init=init,
                 dtype=self.dtype, name="conv2")(h)
    if self.net_actnorm:
      h = ActNorm(logscale_factor=3.0, name="actnorm2")(h)[0]
    h = nn.relu(h)
    return ZeroConv(self.features, self.edge_bias, dtype=self.dtype, name="zero_conv")(h)


class Coupling(Bijector):
  """Affine or additive coupling (Glow section 3.3; NICE for additive).

  x = [x_a, x_b] split in halves along channels, h = NN(x_a) (``CouplingNet``).
  affine:   [log_s', t] = h (first half, second half), s = sigmoid(log_s' + 2),
            y_b = (x_b + t) * s,  inverse x_b = y_b / s - t,  log_det = sum log s.
  additive: y_b = x_b + h,        inverse x_b = y_b - h,      log_det = 0.
  y = [x_a, y_b]. The last convolution of NN starts at zero, so a fresh additive
  coupling is the identity (and a fresh affine one scales x_b by sigmoid(2)).
  """
  width: int = 512
  affine: bool = True
  net_actnorm: bool = False
  edge_bias: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, inverse=False):
    known = None
    if self.has_variable("params", "net"):
      known = 2 * int(self.get_variable("params", "net")["conv1"]["kernel"].shape[2]
                      - self.edge_bias)
    _, _, _, c = check_nhwc(x, "Coupling", known, even_channels=True)
    half = c // 2
    xa, xb = x[..., :half], x[..., half:]
    h = CouplingNet(self.width, c if self.affine else half, self.net_actnorm,
                    self.edge_bias, self.dtype, name="net")(xa)
    yb, log_det = coupling_transform(xb, h, self.affine, inverse)
    return jnp.concatenate([xa, yb.astype(x.dtype)], -1), log_det


def coupling_transform(xb, h, affine: bool, inverse: bool = False):
  """The elementwise part of ``Coupling`` given the network output h = NN(x_a).

  xb: [B,H,W,C/2]; h: float32 [B,H,W,C] (affine: [log_s', t]) or [B,H,W,C/2] (additive).
  Returns (y_b, log_det[B]) (inverse: (x_b, -log_det)); used by ``Coupling`` and by the
  reversible backward pass (``dgmjax.flows.reversible``), so both compute the same maths.
  """
  if not affine:
    return (xb - h if inverse else xb + h), jnp.zeros((xb.shape[0],), jnp.float32)
  half = xb.shape[-1]
  pre, t = h[..., :half], h[..., half:]
  s = jax.nn.sigmoid(pre + 2.0)
  log_det = jnp.sum(jax.nn.log_sigmoid(pre + 2.0), axis=(1, 2, 3))
  if inverse:
    return xb / s - t, -log_det
  return (xb + t) * s, log_det


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
