"""The LMConv backbone: ajayjain/lmconv ``OurPixelCNN`` in Flax Linen.

PixelCNN++ (Salimans et al. 2017) with every convolution replaced by a locally masked
convolution (Jain, Abbeel & Pathak 2020), so that one network serves any generation
order; the order enters only through three per-location masks (``masks.network_masks``).
With F = ``filters`` and R = ``resnets``:

    x' = concat(x in [-1,1], ones)                               [B,H,W,C+1]
    u  = norm(u_init(x'; mask A))                                up stream, list L = [u]
    2x: R gated resnets (mask B), each appended to L;
        u = norm(downsize_u_stream_i(u; dilated mask B)), appended to L
    R gated resnets, appended to L
    u = L.pop()                                                  down stream
    down_layers_0 (R resnets), then 2x: upsize_u_stream_i (dilated) + norm,
        down_layers_{1,2} (R+1 resnets); each resnet takes a = L.pop() as skip input
    out = nin_out(elu(u))                                        [B,H,W,n_out]

where PixelCNN++ down- and up-samples, LMConv keeps the resolution and uses a
dilation-``max_dilation`` convolution instead. A gated resnet is

    h = norm(conv_input(concat_elu(u)))            2F -> F
    h = h + nin_skip(concat_elu(a))                (down stream only) 2F -> F
    h = conv_out(dropout2d(concat_elu(h)))         2F -> 2F
    u + norm(h_1) * sigmoid(h_2)                   (h_1, h_2 = halves of h)

``concat_elu(v) = elu([v, -v])``; ``norm`` is PONO (positional normalisation over the
channels of each pixel, unbiased variance, eps 1e-5) with ``normalization="pono"``, else
the identity; with ``normalization="weight_norm"`` the masked convolutions are weight
normalised instead. ``nin`` layers (1x1, i.e. per-pixel dense) are always weight
normalised, as officially. Dropout is ``Dropout2d`` (whole channels per example).

Parameter tree (``variables["params"]``) and the official state_dict names
(``tests/testdata/state_dicts/lmconv_*``; PyTorch kernels are [out, in, kh, kw]):

    u_init/kernel                  [k,k,C+1,F]   u_init.weight            (transpose 2,3,1,0)
    u_init/bias                    [F]           u_init.bias
    up_layers_{i}/u_stream_{j}/conv_input/{kernel [k,k,2F,F], bias [F]}
                                                 up_layers.i.u_stream.j.conv_input.{weight,bias}
    up_layers_{i}/u_stream_{j}/conv_out/{kernel [k,k,2F,2F], bias [2F]}
                                                 up_layers.i.u_stream.j.conv_out.{weight,bias}
    down_layers_{i}/u_stream_{j}/conv_input, conv_out      as above (down_layers.i...)
    down_layers_{i}/u_stream_{j}/nin_skip/kernel [2F,F]  ...nin_skip.lin_a.weight_v (transposed)
    down_layers_{i}/u_stream_{j}/nin_skip/scale  [F]     ...nin_skip.lin_a.weight_g [F,1]
    down_layers_{i}/u_stream_{j}/nin_skip/bias   [F]     ...nin_skip.lin_a.bias
    downsize_u_stream_{i}/{kernel [k,k,F,F], bias}       downsize_u_stream.i.{weight,bias}
    upsize_u_stream_{i}/{kernel [k,k,F,F], bias}         upsize_u_stream.i.{weight,bias}
    nin_out/{kernel [F,n_out], scale [n_out], bias}      nin_out.lin_a.{weight_v^T, weight_g, bias}

i in 0..2, j in 0..R-1 for up_layers and down_layers_0, 0..R for down_layers_{1,2}.
With ``normalization="weight_norm"`` each masked conv also has ``scale`` [Cout]
(``weight_g`` [Cout,1,1,1]) and its ``kernel`` is ``weight_v``; the effective kernel is
``scale * kernel / ||kernel||`` (norm over k,k,Cin). With ``mask_weight=True`` each masked
conv has ``mask_weight`` [k,k,Cout] (official ``mask_weight`` [Cout,k,k]). ``n_out`` is
set by the head (``heads.num_outputs``; 100 for 10-mixture RGB, 30 greyscale, 2 for the
official binarised 2-way softmax).

Scanned layout (``scan=True``). Each of the six streams runs its ``num`` gated resnets
(num = R for ``up_layers_{0,1,2}`` and ``down_layers_0``, R+1 for ``down_layers_{1,2}``)
as ONE ``flax.linen.scan`` over a gated-resnet body (``ScannedStream``), so the network
compiles six bodies whatever R is, instead of 6R+2 resnets. The body's parameters are
stacked on a leading [num] axis under the scan module ``u_stream``:

    up_layers_{i}/u_stream/conv_input/{kernel [num,k,k,2F,F], bias [num,F]}
    up_layers_{i}/u_stream/conv_out/{kernel [num,k,k,2F,2F], bias [num,2F]}
    down_layers_{i}/u_stream/conv_input, conv_out             as above
    down_layers_{i}/u_stream/nin_skip/{kernel [num,2F,F], scale [num,F], bias [num,F]}

(plus ``scale`` [num,Cout] / ``mask_weight`` [num,k,k,Cout] with those options), i.e.
``X/u_stream/...[j] == X/u_stream_j/...`` of the unrolled tree; every other parameter
keeps its unrolled path. ``stack_resnets`` / ``unstack_resnets`` convert between the two
layouts (same model, same outputs). Up stream i: carry u [B,H,W,F], no per-step input;
the per-step outputs come back stacked as ys [num,B,H,W,F] and are unstacked into the
list L. Down stream i: carry u, per-step input the skips [num,B,H,W,F] stacked in the
order they are consumed (``a_j = L.pop()`` for j = 0..num-1). The engine and the
``deterministic`` flag are broadcast (static); the params and dropout RNGs are split per
step. The one-pixel ``StepEngine`` keeps one cache per convolution call, in call order,
which a scan body (one trace for all steps) cannot address; the sampler therefore runs
the unrolled network on ``unstack_resnets`` of the scanned variables (``sampling``).

The convolutions are delegated to an ``engine`` so that the same module code runs the
whole image (``FullEngine``: ``conv.locally_masked_conv`` with the masks) or one pixel
per example with cached activations (``StepEngine``, used by the sampler).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dgmjax.nn.init import torch_uniform
from dgmjax.nn.stacking import stack_trees, unstack_tree
from dgmjax.nn.remat import remat_module
from dgmjax.nn.shift_conv import locally_masked_conv, locally_masked_conv_at
from dgmjax.nn.weight_norm import norm as wn_norm, weight_norm

FIRST, LATER, DILATED = 0, 1, 2   # which of the three masks a convolution uses


def concat_elu(x):
  return jax.nn.elu(jnp.concatenate([x, -x], axis=-1))


def pono(x, eps=1e-5):
  """Positional normalisation over the last (channel) axis, unbiased variance (torch.var)."""
  n = x.shape[-1]
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.sum(jnp.square(x - mean), axis=-1, keepdims=True) / max(n - 1, 1)
  return (x - mean) / jnp.sqrt(var + eps)


class FullEngine:
  """Runs masked convolutions over the whole image with masks (first, later, dilated),
  each [H,W,k,k] or [B,H,W,k,k].

  ``channels``: the input channel count of every convolution, in the call order of the
  UNROLLED network (the order of ``StepEngine``'s caches; read by
  ``LMConvModel.conv_input_channels``). A scanned stream runs its body with ``quiet()``
  (a scan traces its body more than once, and once stands for ``num`` layers) and appends
  its layers' widths itself, so the list is the same for ``scan`` True and False."""

  def __init__(self, masks: Sequence[jax.Array], record: bool = True):
    self.masks = tuple(masks)
    self.record = record
    self.channels: list[int] = []

  def quiet(self) -> "FullEngine":
    """An engine with the same masks that records nothing (for a scan body)."""
    return FullEngine(self.masks, record=False)

  def conv(self, x, kernel, bias, mask_weight, kind, dilation):
    if self.record:
      self.channels.append(x.shape[-1])
    return locally_masked_conv(x, kernel, bias, self.masks[kind], dilation, mask_weight)


class StepEngine:
  """Runs masked convolutions at ONE location (r, c) per call of the network.

  ``caches[n]``: [B, H+2P, W+2P, Cin_n] the input of the n-th convolution (in call
  order) at every location already visited, zero-padded by P = k//2 * max_dilation.
  Each call writes the input at (r, c) into its cache, then reads the k x k (dilated)
  neighbourhood and applies the layer there. Entries not yet visited are multiplied by a
  zero mask, because the masks only admit earlier pixels (and the centre, which has just
  been written), so the result equals the full network at (r, c) exactly.
  ``masks_at``: the three [k,k] masks of location (r, c). New caches in ``self.out``.
  """

  def __init__(self, caches, r, c, masks_at, pad: int):
    self.caches, self.r, self.c = list(caches), r, c
    self.masks_at, self.pad = tuple(masks_at), pad
    self.out: list = []

  def conv(self, x, kernel, bias, mask_weight, kind, dilation):
    n = len(self.out)
    cache = self.caches[n]
    b = cache.shape[0]
    k = kernel.shape[0]
    cache = lax.dynamic_update_slice(cache, x[:, None, None, :].astype(cache.dtype),
                                     (0, self.r + self.pad, self.c + self.pad, 0))
    self.out.append(cache)
    span = (k - 1) * dilation + 1
    start = self.pad - (k // 2) * dilation
    window = lax.dynamic_slice(cache, (0, self.r + start, self.c + start, 0),
                               (b, span, span, cache.shape[-1]))[:, ::dilation, ::dilation]
    return locally_masked_conv_at(window.astype(x.dtype), kernel, bias, self.masks_at[kind],
                                  mask_weight)


class MaskedConv(nn.Module):
  """A locally masked k x k convolution with official init (kaiming_uniform(a=sqrt 5))."""
  features: int
  kind: int
  kernel_size: int = 3
  dilation: int = 1
  weight_norm: bool = False
  use_bias: bool = True
  mask_weight: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, engine):
    k, cin, cout = self.kernel_size, x.shape[-1], self.features
    bound = 1.0 / math.sqrt(cin * k * k)
    kernel = self.param("kernel", torch_uniform(bound), (k, k, cin, cout))
    if self.weight_norm:
      scale = self.param("scale", lambda rng: wn_norm(kernel, (0, 1, 2)))
      kernel = weight_norm(kernel, scale, (0, 1, 2))
    bias = self.param("bias", torch_uniform(bound), (cout,)) if self.use_bias else None
    mw = (self.param("mask_weight", torch_uniform(1.0 / k), (k, k, cout))
          if self.mask_weight else None)
    cast = lambda v: None if v is None else v.astype(self.dtype)
    return engine.conv(x.astype(self.dtype), cast(kernel), cast(bias), cast(mw), self.kind,
                       self.dilation)


class NIN(nn.Module):
  """Weight-normalised per-pixel dense layer (official ``nin`` = wn(nn.Linear)) on [..., Cin]."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    bound = 1.0 / math.sqrt(cin)
    v = self.param("kernel", torch_uniform(bound), (cin, self.features))
    g = self.param("scale", lambda rng: wn_norm(v, (0,)))
    b = self.param("bias", torch_uniform(bound), (self.features,))
    w = weight_norm(v, g, (0,))
    return x.astype(self.dtype) @ w.astype(self.dtype) + b.astype(self.dtype)


class GatedResnet(nn.Module):
  """The official ``gated_resnet`` with locally masked convolutions (mask B).

  ``__call__(u, a, engine, deterministic)``: u [B,H,W,F] (or [B,F] with a StepEngine), a
  the skip input of the same shape (``skip=True``) or None -> [same shape as u]."""
  filters: int
  skip: bool
  conv_kwargs: Any
  pono: bool
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, u, a, engine, deterministic):
    norm = pono if self.pono else (lambda v: v)
    h = MaskedConv(self.filters, LATER, name="conv_input", **self.conv_kwargs)(
        concat_elu(u), engine)
    h = norm(h)
    if self.skip:
      h = h + NIN(self.filters, self.dtype, name="nin_skip")(concat_elu(a))
    h = concat_elu(h)
    if self.dropout > 0:
      # Dropout2d: one draw per (example, channel), broadcast over the pixels.
      h = nn.Dropout(self.dropout, broadcast_dims=tuple(range(1, h.ndim - 1)))(
          h, deterministic=deterministic)
    h = MaskedConv(2 * self.filters, LATER, name="conv_out", **self.conv_kwargs)(h, engine)
    h1, h2 = jnp.split(h, 2, axis=-1)
    return u + norm(h1) * jax.nn.sigmoid(h2)

  @staticmethod
  def conv_input_widths(width: int, filters: int) -> tuple[int, int]:
    """Input channels of (conv_input, conv_out) for u of ``width`` channels: both see a
    concat_elu, i.e. (2 * width, 2 * filters)."""
    return 2 * width, 2 * filters


class _ResnetStep(GatedResnet):
  """``GatedResnet`` as an ``nn.scan`` body: (carry u, per-step a) -> (u', y) with y = u'
  when ``emit`` (up streams: the outputs are the down stream's skips) else None."""
  emit: bool = True

  @nn.compact
  def __call__(self, u, a, engine, deterministic):
    u = super().__call__(u, a, engine, deterministic)
    return u, (u if self.emit else None)


class _StreamFields(nn.Module):
  """The fields of a stream of ``num`` gated resnets (``Stream``, ``ScannedStream``)."""
  num: int
  skip: bool
  filters: int
  conv_kwargs: Any
  pono: bool
  dropout: float
  remat: bool | str = False
  dtype: Any = jnp.float32


class Stream(_StreamFields):
  """``num`` gated resnets in a row (official ``OurPixelCNNLayer_up``/``_down``).

  ``skips``: None (up stream) or the list of ``num`` skip inputs (down stream). Returns
  the list of the resnets' outputs. Parameters ``u_stream_{j}/...`` (the unrolled layout;
  ``ScannedStream`` is the scanned one).
  """

  @nn.compact
  def __call__(self, u, skips, engine, deterministic):
    block = remat_module(GatedResnet, self.remat, static_argnums=(3, 4))
    outs = []
    for j in range(self.num):
      a = skips[j] if self.skip else None
      u = block(self.filters, self.skip, self.conv_kwargs, self.pono, self.dropout,
                self.dtype, name=f"u_stream_{j}")(u, a, engine, deterministic)
      outs.append(u)
    return outs


class ScannedStream(_StreamFields):
  """``Stream`` with its ``num`` gated resnets run as ONE ``nn.scan`` (``scan=True``).

  Parameters: ``u_stream/...`` stacked on a leading [num] axis (module docstring).
  ``__call__(u, skips, engine, deterministic)``: u [B,H,W,F]; skips None (up stream) or
  the list of ``num`` skip inputs [B,H,W,F], consumed in list order (stacked to
  [num,B,H,W,F] as the scan's xs). Returns the list of the ``num`` outputs (up stream,
  from the stacked ys [num,B,H,W,F]); a down stream returns only its last output, as a
  one-element list (the network reads nothing else, so no ys are built). ``remat``
  rematerialises the scan body. Needs a ``FullEngine`` (see the module docstring).
  """

  @nn.compact
  def __call__(self, u, skips, engine, deterministic):
    if not isinstance(engine, FullEngine):
      raise TypeError(f"a scanned LMConv stream runs with a FullEngine only, not "
                      f"{type(engine).__name__}; run the unrolled network (scan=False) on "
                      f"unstack_resnets(variables) instead (as the sampler does)")
    body = remat_module(_ResnetStep, self.remat, static_argnums=(3, 4))
    scan = nn.scan(body, variable_axes={"params": 0},
                   split_rngs={"params": True, "dropout": True},
                   in_axes=(0, nn.broadcast, nn.broadcast), length=self.num)
    xs = jnp.stack(skips) if self.skip else None
    width = u.shape[-1]
    u, ys = scan(self.filters, self.skip, self.conv_kwargs, self.pono, self.dropout,
                 self.dtype, not self.skip, name="u_stream")(u, xs, engine.quiet(),
                                                             deterministic)
    if engine.record:
      engine.channels.extend(GatedResnet.conv_input_widths(width, self.filters) * self.num)
    if ys is None:
      return [u]
    return [ys[j] for j in range(self.num)]


class LMConvNetwork(nn.Module):
  """``OurPixelCNN``: x in [-1,1] [B,H,W,C] (or [B,C] with a StepEngine) -> [.., n_out].

  ``scan``: each stream's gated resnets as one ``nn.scan`` with stacked parameters
  (``ScannedStream``; compile time flat in R; FullEngine only); False: unrolled
  (``Stream``, the official parameter tree)."""
  num_outputs: int
  filters: int = 160
  resnets: int = 5
  kernel_size: int = 3
  max_dilation: int = 2
  normalization: str = "pono"
  dropout: float = 0.5
  conv_bias: bool = True
  mask_weight: bool = False
  remat: bool | str = False
  dtype: Any = jnp.float32
  scan: bool = False

  @nn.compact
  def __call__(self, x, engine, deterministic: bool = True):
    f, r = self.filters, self.resnets
    use_pono = self.normalization == "pono"
    norm = pono if use_pono else (lambda v: v)
    ck = dict(kernel_size=self.kernel_size, weight_norm=self.normalization == "weight_norm",
              use_bias=self.conv_bias, mask_weight=self.mask_weight, dtype=self.dtype)
    stream_cls = ScannedStream if self.scan else Stream
    stream = lambda num, skip, name: stream_cls(num, skip, f, ck, use_pono, self.dropout,
                                                self.remat, self.dtype, name=name)

    x = x.astype(self.dtype)
    x = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
    stack = [norm(MaskedConv(f, FIRST, name="u_init", **ck)(x, engine))]
    for i in range(3):
      stack += stream(r, False, f"up_layers_{i}")(stack[-1], None, engine, deterministic)
      if i < 2:
        u = MaskedConv(f, DILATED, dilation=self.max_dilation, name=f"downsize_u_stream_{i}",
                       **ck)(stack[-1], engine)
        stack.append(norm(u))
    u = stack.pop()
    for i in range(3):
      num = r if i == 0 else r + 1
      skips = [stack.pop() for _ in range(num)]
      u = stream(num, True, f"down_layers_{i}")(u, skips, engine, deterministic)[-1]
      if i < 2:
        u = MaskedConv(f, DILATED, dilation=self.max_dilation, name=f"upsize_u_stream_{i}",
                       **ck)(u, engine)
        u = norm(u)
    out = NIN(self.num_outputs, self.dtype, name="nin_out")(jax.nn.elu(u))
    return out.astype(jnp.float32)


# ---- layouts: unrolled (u_stream_j) <-> scanned (u_stream, leading [num] axis) ---------

_STREAM = re.compile(r"(up|down)_layers_\d+")
_RESNET = re.compile(r"u_stream_(\d+)")


def stack_resnets(variables: Mapping[str, Any]) -> dict:
  """Unrolled variables -> the ``scan=True`` layout. Same model, same outputs.

  In every collection, ``{up,down}_layers_i/u_stream_j/<leaf path>`` (j = 0..num-1) become
  ``{up,down}_layers_i/u_stream/<leaf path>`` with the num arrays stacked on a new leading
  axis ([num, *shape]); every other entry is kept as it is. Variables already in the
  scanned layout pass through unchanged. ValueError if a stream's indices have gaps.
  """
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      idx = sorted(int(m.group(1)) for m in map(_RESNET.fullmatch, sub) if m) \
          if _STREAM.fullmatch(name) and isinstance(sub, Mapping) else []
      if not idx:
        out[col][name] = sub
        continue
      if idx != list(range(len(idx))):
        raise ValueError(f"{col}/{name}: u_stream indices {idx} are not 0..{len(idx) - 1}")
      rest = {k: v for k, v in sub.items() if not _RESNET.fullmatch(k)}
      if "u_stream" in rest:
        raise ValueError(f"{col}/{name} holds both u_stream and u_stream_j entries")
      rest["u_stream"] = stack_trees([sub[f"u_stream_{j}"] for j in idx])
      out[col][name] = rest
  return out


def unstack_resnets(variables: Mapping[str, Any]) -> dict:
  """The inverse of ``stack_resnets``: ``{up,down}_layers_i/u_stream/<leaf path>`` with a
  leading [num] axis -> ``{up,down}_layers_i/u_stream_j/<leaf path>`` = the j-th slice,
  j = 0..num-1 (the unrolled, official layout: e.g. to sample, which runs the unrolled
  network, or to export). Unrolled variables pass through unchanged."""
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      stacked = sub.get("u_stream") \
          if _STREAM.fullmatch(name) and isinstance(sub, Mapping) else None
      if stacked is None:
        out[col][name] = sub
        continue
      rest = {k: v for k, v in sub.items() if k != "u_stream"}
      for j, resnet in enumerate(unstack_tree(stacked)):
        rest[f"u_stream_{j}"] = resnet
      out[col][name] = rest
  return out
