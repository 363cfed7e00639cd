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
    up_layers_{i}/u_stream/conv_input/{kernel[j] [k,k,2F,F], bias[j] [F]}
                                                 up_layers.i.u_stream.j.conv_input.{weight,bias}
    up_layers_{i}/u_stream/conv_out/{kernel[j] [k,k,2F,2F], bias[j] [2F]}
                                                 up_layers.i.u_stream.j.conv_out.{weight,bias}
    down_layers_{i}/u_stream/conv_input, conv_out          as above (down_layers.i...)
    down_layers_{i}/u_stream/nin_skip/kernel[j] [2F,F]   ...nin_skip.lin_a.weight_v (transposed)
    down_layers_{i}/u_stream/nin_skip/scale[j]  [F]      ...nin_skip.lin_a.weight_g [F,1]
    down_layers_{i}/u_stream/nin_skip/bias[j]   [F]      ...nin_skip.lin_a.bias
    downsize_u_stream_{i}/{kernel [k,k,F,F], bias}       downsize_u_stream.i.{weight,bias}
    upsize_u_stream_{i}/{kernel [k,k,F,F], bias}         upsize_u_stream.i.{weight,bias}
    nin_out/{kernel [F,n_out], scale [n_out], bias}      nin_out.lin_a.{weight_v^T, weight_g, bias}

i in 0..2, j in 0..R-1 for up_layers and down_layers_0, 0..R for down_layers_{1,2}: the
leaves under ``u_stream`` are stacked [num, ...] (below), ``[j]`` is resnet j.
With ``normalization="weight_norm"`` each masked conv also has ``scale`` [Cout]
(``weight_g`` [Cout,1,1,1]) and its ``kernel`` is ``weight_v``; the effective kernel is
``scale * kernel / ||kernel||`` (norm over k,k,Cin). With ``mask_weight=True`` each masked
conv has ``mask_weight`` [k,k,Cout] (official ``mask_weight`` [Cout,k,k]). ``n_out`` is
set by the head (``heads.num_outputs``; 100 for 10-mixture RGB, 30 greyscale, 2 for the
official binarised 2-way softmax).

One layout, whatever the compute setting. Each of the six streams runs its ``num``
gated resnets (num = R for ``up_layers_{0,1,2}`` and ``down_layers_0``, R+1 for
``down_layers_{1,2}``) through the one executor of repeated blocks
(``dgmjax.nn.repeat.repeat``: a scan, partly or fully unrolled by ``compute.unroll``,
each block rematerialised by ``compute.remat``), so the parameters of a stream's resnets
are stacked on a leading [num] axis under ``u_stream`` and the number of parameter arrays
does not grow with R:

    {up,down}_layers_{i}/u_stream/conv_input/{kernel [num,k,k,2F,F], bias [num,F]}
    {up,down}_layers_{i}/u_stream/conv_out/{kernel [num,k,k,2F,2F], bias [num,2F]}
    down_layers_{i}/u_stream/nin_skip/{kernel [num,2F,F], scale [num,F], bias [num,F]}

(plus ``scale`` [num,Cout] / ``mask_weight`` [num,k,k,Cout] with those options): slice j
is the official ``{up,down}_layers.i.u_stream.j`` (``dgmjax.convert.lmconv`` maps the
official per-resnet state_dict, and an old per-resnet dgmjax tree ``u_stream_{j}``, to
this layout). Up stream i: carry u [B,H,W,F], the per-block outputs come back stacked as
ys [num,B,H,W,F] (the down stream's skips). Down stream i: carry u, per-block input the
skips [num,B,H,W,F] in the order they are consumed (``a_j = L.pop()``). The engine and
the ``deterministic`` flag are broadcast; the params and dropout RNGs are split per block.

The convolutions are delegated to an ``engine`` so that the same module code runs the
whole image (``FullEngine``: ``locally_masked_conv`` with the masks) or one pixel per
example (``StepEngine``, the cached sampler: each masked convolution reads its input's
neighbourhood from the collection ``window`` and hands its input at the pixel out in
``centre``). Inside the samplers' pixel loops the streams read their resnets' parameters
as separate arrays ``u_stream/<j>/...``, sliced once per call
(``dgmjax.nn.repeat.unstack_blocks``): XLA:CPU would copy a stacked slice at every pixel.

How it runs (dtype, remat, unroll) is the one ``compute`` value
(``dgmjax.nn.compute.Compute``) the network receives and hands to its layers; the masked
convolutions have one formulation (the shift-and-add core of ``dgmjax.nn.shift_conv``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from dgmjax.nn.compute import DEFAULT, Compute
from dgmjax.nn.init import torch_uniform
from dgmjax.nn.repeat import repeat
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


def check_layout(params: Mapping[str, Any]) -> None:
  """ValueError (one line) if ``params`` are in the old per-resnet dgmjax layout
  (``{up,down}_layers_i/u_stream_j/...``) instead of the stacked one."""
  for name, sub in params.items():
    if isinstance(sub, Mapping) and "u_stream_0" in sub:
      raise ValueError(f"LMConv params in the old per-resnet layout ({name}/u_stream_0/...); "
                       f"convert them with dgmjax.convert.lmconv.stack_resnets(variables)")


class FullEngine:
  """Runs masked convolutions over the whole image with masks (first, later, dilated),
  each [H,W,k,k] or [B,H,W,k,k]. ``unstacked``: the streams' resnets read separate
  parameter arrays ``u_stream/<j>/...`` (``repeat(..., unstacked=True)``), for a network
  applied inside a loop (the naive sampler)."""

  def __init__(self, masks: Sequence[jax.Array], unstacked: bool = False):
    self.masks, self.unstacked = tuple(masks), unstacked

  def conv(self, layer, x, kernel, bias, mask_weight, kind, dilation):
    del layer
    return locally_masked_conv(x, kernel, bias, self.masks[kind], dilation, mask_weight)


class StepEngine:
  """Runs masked convolutions at ONE location (r, c) per call of the network.

  The inputs a convolution saw at the locations already visited are kept by the caller
  (the sampler), one cache [B, H+2P, W+2P, Cin] per convolution, zero-padded by
  P = ``pad`` = k//2 * max_dilation; what crosses the network (and a stream's executor)
  per step is small:

  - in, collection ``window``: ``<layer path>/input`` [B, 2P+1, 2P+1, Cin], the cache's
    neighbourhood of (r, c) before this step (zeros at locations not yet visited);
  - out, collection ``centre``: ``<layer path>/input`` [B, Cin], the input at (r, c),
    which the caller writes into the cache.

  Each layer has its own entries (a stream's resnets read ``u_stream/<j>/...``, as their
  parameters: ``unstacked``, see ``FullEngine``). The layer puts its input at the window's
  centre and applies its (dilated) kernel there. Entries not yet visited are multiplied
  by a zero mask, because the masks only admit earlier pixels (and the centre, just
  written), so the result equals the full network at (r, c) exactly. ``masks_at``: the
  three [k,k] masks of location (r, c). Apply the network with ``mutable=["centre"]``
  (and ``"window"`` too to create zero windows, e.g. under ``jax.eval_shape``).
  """
  unstacked = True

  def __init__(self, masks_at, pad: int):
    self.masks_at, self.pad = tuple(masks_at), pad

  def conv(self, layer, x, kernel, bias, mask_weight, kind, dilation):
    (b, cin), p, k = x.shape, self.pad, kernel.shape[0]
    window = layer.variable("window", "input", jnp.zeros, (b, 2 * p + 1, 2 * p + 1, cin),
                            x.dtype).value
    centre = layer.variable("centre", "input", jnp.zeros, (b, cin), x.dtype)
    window = window.astype(x.dtype).at[:, p, p].set(x)
    lo, hi = p - (k // 2) * dilation, p + (k // 2) * dilation + 1
    out = locally_masked_conv_at(window[:, lo:hi:dilation, lo:hi:dilation], kernel, bias,
                                 self.masks_at[kind], mask_weight)
    # The caller writes ``centre`` into the cache this window was read from. Tied to the
    # output (0 * out is not folded away for floats), the write follows the read in the
    # data flow and XLA updates the cache in place; untied, the two are unordered and
    # XLA:CPU copies every cache at every pixel (2x the step time at 12x12x3, F32, R2;
    # ``lax.optimization_barrier`` is dropped before XLA:CPU schedules). A non-finite
    # output makes the cached input NaN, where the output at this pixel is not finite.
    centre.value = x + 0 * out[:, :1].astype(x.dtype)
    return out


class MaskedConv(nn.Module):
  """A locally masked k x k convolution with official init (kaiming_uniform(a=sqrt 5)),
  computed as ``compute`` says (dtype)."""
  features: int
  kind: int
  kernel_size: int = 3
  dilation: int = 1
  weight_norm: bool = False
  use_bias: bool = True
  mask_weight: bool = False
  compute: Compute = DEFAULT

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
    cast = lambda v: None if v is None else self.compute.cast(v)
    return engine.conv(self, cast(x), cast(kernel), cast(bias), cast(mw), self.kind,
                       self.dilation)


class NIN(nn.Module):
  """Weight-normalised per-pixel dense layer (official ``nin`` = wn(nn.Linear)) on [..., Cin]."""
  features: int
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    bound = 1.0 / math.sqrt(cin)
    v = self.param("kernel", torch_uniform(bound), (cin, self.features))
    g = self.param("scale", lambda rng: wn_norm(v, (0,)))
    b = self.param("bias", torch_uniform(bound), (self.features,))
    w = weight_norm(v, g, (0,))
    cast = self.compute.cast
    return cast(x) @ cast(w) + cast(b)


class GatedResnet(nn.Module):
  """The official ``gated_resnet`` with locally masked convolutions (mask B), as a block of
  the executor: ``__call__(u, a, engine, deterministic) -> (u', y)``.

  u [B,H,W,F] (or [B,F] with a StepEngine); a: the skip input of the same shape
  (``skip=True``) or None. y = u' when ``emit`` (up streams: the outputs are the down
  stream's skips), else None. ``conv``/``nin``: the network's layer constructors (built
  once, with its compute setting)."""
  filters: int
  skip: bool
  conv: Callable
  nin: Callable
  pono: bool
  dropout: float
  emit: bool

  @nn.compact
  def __call__(self, u, a, engine, deterministic):
    norm = pono if self.pono else (lambda v: v)
    h = norm(self.conv(self.filters, LATER, name="conv_input")(concat_elu(u), engine))
    if self.skip:
      h = h + self.nin(self.filters, name="nin_skip")(concat_elu(a))
    h = concat_elu(h)
    if self.dropout > 0:
      # Dropout2d: one draw per (example, channel), broadcast over the pixels.
      h = nn.Dropout(self.dropout, broadcast_dims=tuple(range(1, h.ndim - 1)))(
          h, deterministic=deterministic)
    h1, h2 = jnp.split(self.conv(2 * self.filters, LATER, name="conv_out")(h, engine), 2,
                       axis=-1)
    u = u + norm(h1) * jax.nn.sigmoid(h2)
    return u, (u if self.emit else None)


class Stream(nn.Module):
  """``num`` gated resnets in a row (official ``OurPixelCNNLayer_up``/``_down``), run by
  the executor (``dgmjax.nn.repeat.repeat``) with parameters ``u_stream/...`` stacked on
  a leading [num] axis (module docstring).

  ``__call__(u, skips, engine, deterministic) -> (u', ys)``: u [B,H,W,F] (or [B,F]);
  skips None (up stream) or the ``num`` skip inputs stacked [num,B,H,W,F], consumed in
  that order. ys: the ``num`` outputs stacked [num,B,H,W,F] (up stream), or None (a down
  stream: the network reads only its last output u')."""
  num: int
  skip: bool
  filters: int
  conv: Callable
  nin: Callable
  pono: bool
  dropout: float
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, u, skips, engine, deterministic):
    stack = repeat(GatedResnet, self.num, self.compute, collections=("params", "window", "centre"),
                   rngs=("params", "dropout"), broadcast=2, static_argnums=(3, 4),
                   unstacked=engine.unstacked)
    return stack(self.filters, self.skip, self.conv, self.nin, self.pono, self.dropout,
                 not self.skip, name="u_stream")(u, skips, engine, deterministic)


class LMConvNetwork(nn.Module):
  """``OurPixelCNN``: x in [-1,1] [B,H,W,C] (or [B,C] with a StepEngine) -> [.., n_out]
  float32, computed as ``compute`` says."""
  num_outputs: int
  filters: int = 160
  resnets: int = 5
  kernel_size: int = 3
  max_dilation: int = 2
  normalization: str = "pono"
  dropout: float = 0.5
  conv_bias: bool = True
  mask_weight: bool = False
  compute: Compute = DEFAULT

  @nn.compact
  def __call__(self, x, engine, deterministic: bool = True):
    f, r = self.filters, self.resnets
    use_pono = self.normalization == "pono"
    norm = pono if use_pono else (lambda v: v)
    conv = functools.partial(MaskedConv, kernel_size=self.kernel_size,
                             weight_norm=self.normalization == "weight_norm",
                             use_bias=self.conv_bias, mask_weight=self.mask_weight,
                             compute=self.compute)
    nin = functools.partial(NIN, compute=self.compute)
    stream = lambda num, skip, name: Stream(num, skip, f, conv, nin, use_pono, self.dropout,
                                            self.compute, name=name)
    middle = lambda name: conv(f, DILATED, dilation=self.max_dilation, name=name)

    x = self.compute.cast(x)
    x = jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)
    # up: heads[i] enters up stream i, whose outputs ys[i] [R,...] the down streams read
    heads, ys = [norm(conv(f, FIRST, name="u_init")(x, engine))], []
    for i in range(3):
      ys.append(stream(r, False, f"up_layers_{i}")(heads[i], None, engine, deterministic)[1])
      if i < 2:
        heads.append(norm(middle(f"downsize_u_stream_{i}")(ys[i][-1], engine)))
    # down: the official list L = [heads_0, ys_0, heads_1, ys_1, heads_2, ys_2] popped from
    # the end, i.e. down stream i reads (ys_{2-i} reversed, heads_{2-i}) after u = L.pop()
    u = ys[2][-1]
    for i in range(3):
      up = ys[2 - i][:-1] if i == 0 else ys[2 - i]
      skips = jnp.concatenate([up[::-1], heads[2 - i][None]], axis=0)
      u = stream(r + (i > 0), True, f"down_layers_{i}")(u, skips, engine, deterministic)[0]
      if i < 2:
        u = norm(middle(f"upsize_u_stream_{i}")(u, engine))
    out = nin(self.num_outputs, name="nin_out")(jax.nn.elu(u))
    return out.astype(jnp.float32)
