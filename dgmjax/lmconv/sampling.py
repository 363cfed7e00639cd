"""Sampling and completion in any order, each one compiled program (``lax.fori_loop``).

Two samplers give the same distribution (and, with the same key, the same images up to
float rounding):

- ``naive``: one full forward pass of the network per pixel, reading the output at the
  pixel being generated (what ajayjain/lmconv does, in a Python loop). Cost: H*W full
  passes.
- ``cached`` (default): the network evaluated at ONE location per step. Every feature at
  location l depends only on pixels before l in the order, so once l's turn comes all
  the features its masked kernels read (earlier locations and l itself) are final: they
  were computed at their own steps and are kept in one cache per convolution input
  (stacked [num, ...] for a stream's resnets, like their parameters). A step gathers each
  cache's neighbourhood of l, evaluates the layers at l only (``network.StepEngine``),
  writes their inputs at l into the caches, and after sampling writes the new pixel into
  the first layer's input cache. The cost of the whole image is that of ONE forward
  pass (in FLOPs) instead of H*W of them, plus H*W small-matmul overheads.

Both run the network that training runs (``LMConvNetwork``, the same parameters
and the same executor); only its engine differs.

Both run the pixel loop on per-resnet parameter arrays, sliced from the stacked ones once
per call (``dgmjax.nn.repeat.unstack_blocks``), and ``StepEngine`` orders each cache's
write after its window's read, so that XLA updates the caches in place: a slice of a
stacked array, or a cache whose write is unordered with its read, is copied by XLA:CPU at
every pixel step (``experiments/results/HISTORY.md`` has the measurements).

What would make it faster still:
- Fewer, larger steps: a step is ~70 tiny [B, k*k*Cin] x [k*k*Cin, Cout] matmuls plus a
  cache write and gather each, so at small batch it is latency-bound; batching more
  images per call is nearly free, and a fused per-step kernel (or a GPU) would cut the
  per-layer overhead.
- Parallel fixed-point (Jacobi) iteration: draw every pixel's noise up front (Gumbel
  for the component, logistic for the value), then repeat "one full forward pass,
  resample ALL pixels with their fixed noise" until the image stops changing. Pixel
  t depends only on pixels before it, so after n sweeps the first n pixels of the order
  are final (induction), and any fixed point equals the sequential sample with the same
  noise (x_t = f_t(x_<t, noise_t) determines x uniquely by induction), so stopping at
  the first unchanged sweep is exact. It takes at most H*W sweeps and often far fewer
  when long-range dependences are weak (Song et al. 2021, "Accelerating Feedforward
  Computation via Parallel Nonlinear Equation Solving"); each sweep is a full pass, so
  it pays off only when the sweep count is well below H*W / (cost of a full pass in
  steps of the cached sampler), i.e. on wide accelerators rather than on CPUs.
- Caching in a PixelCNN++ raster order only (Ramachandran et al. 2017, "Fast
  Generation for Convolutional Autoregressive Models") is the special case of the
  cache used here; LMConv's masks make it work for any order.

Completion: the order puts every observed pixel first (``orders.observed_first``); the
loop visits all positions, keeping the observed value where a pixel is observed and
sampling it otherwise, so observed pixels come back unchanged and each hidden pixel is
drawn from p(x_i | observed, earlier hidden) -- an exact sample of p(hidden | observed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import images
from dgmjax.lmconv import heads, masks as masks_lib
from dgmjax.lmconv.network import FullEngine, StepEngine, check_layout
from dgmjax.nn.repeat import unstack_blocks

METHODS = ("cached", "naive")


def _pixel(a, r, c):
  """a[:, r, c] for traced r, c: [B, ...]."""
  return lax.dynamic_index_in_dim(lax.dynamic_index_in_dim(a, r, 1, False), c, 1, False)


def _set_pixel(a, r, c, v):
  return lax.dynamic_update_slice(a, v[:, None, None].astype(a.dtype),
                                  (0, r, c) + (0,) * (a.ndim - 3))


def generate(model, params, rng, canvas, order, fixed, *, method="cached",
             mixture_temperature=1.0, logistic_temperature=1.0, temperature=1.0,
             return_outputs=False):
  """Fills ``canvas`` pixel by pixel in ``order``.

  Args:
    model: an ``LMConvModel``.
    params: its ``variables["params"]``.
    rng: PRNG key; step t uses ``fold_in(rng, t)`` whatever the method.
    canvas: uint8 [B,H,W,C] initial image (values used where ``fixed``).
    order: int32 [H*W] generation order (may be traced).
    fixed: bool [H*W] per flat pixel: keep the canvas value (observed) instead of sampling.
    method: "cached" or "naive" (see the module docstring).
    return_outputs: also return the head outputs float32 [B,H,W,n_out] seen at each step.

  Returns:
    uint8 [B,H,W,C] (and the outputs when asked).
  """
  if method not in METHODS:
    raise ValueError(f"unknown sampling method {method!r}; expected one of {METHODS}")
  b, (h, w, c) = canvas.shape[0], model.image_shape
  n_out = model.num_outputs
  mk = masks_lib.network_masks(order, h, w, model.kernel_size, model.max_dilation)
  net = model.network
  check_layout(params)
  # sliced once here, not at every pixel step (dgmjax.nn.repeat: unstacked)
  variables = {"params": unstack_blocks(params, "u_stream")}

  def draw(t, out):
    return heads.sample(model.resolved_head, jax.random.fold_in(rng, t), out, c,
                        model.num_bins, model.mixtures, mixture_temperature,
                        logistic_temperature, temperature)

  outs0 = jnp.zeros((b, h, w, n_out), jnp.float32)

  if method == "naive":
    def body(t, carry):
      canvas, outs = carry
      p = order[t]
      r, col = p // w, p % w
      out = net.apply(variables, images.to_centered(canvas, model.num_bins),
                      FullEngine(mk, unstacked=True), True)
      o = _pixel(out, r, col)
      new = jnp.where(fixed[p], _pixel(canvas, r, col), draw(t, o))
      return _set_pixel(canvas, r, col, new), _set_pixel(outs, r, col, o)
    canvas, outs = lax.fori_loop(0, h * w, body, (canvas, outs0))
    return (canvas, outs) if return_outputs else canvas

  pad = (model.kernel_size // 2) * model.max_dilation
  step = lambda r, col: StepEngine([m[r, col] for m in mk], pad)
  x0 = jnp.zeros((b, c), model.compute.jnp_dtype)
  windows = jax.eval_shape(lambda: net.apply(variables, x0, step(0, 0), True,
                                             mutable=["window", "centre"])[1]["window"])
  # one cache [..., B, H+2P, W+2P, Cin] per convolution ([num, ...] in a stream), zeros
  caches = jax.tree_util.tree_map(
      lambda a: jnp.zeros(a.shape[:-3] + (h + 2 * pad, w + 2 * pad, a.shape[-1]), a.dtype),
      windows)

  def at(a, r, col):   # index of the cache entry (r, col) in padded coordinates
    return (0,) * (a.ndim - 3) + (r, col, 0)

  def body(t, carry):
    canvas, caches, outs = carry
    p = order[t]
    r, col = p // w, p % w
    cur = _pixel(canvas, r, col)                                   # [B,C]
    near = jax.tree_util.tree_map(
        lambda a: lax.dynamic_slice(a, at(a, r, col), a.shape[:-3] + (2 * pad + 1,
                                                                      2 * pad + 1, a.shape[-1])),
        caches)
    o, new = net.apply({**variables, "window": near}, images.to_centered(cur, model.num_bins),
                       step(r, col), True, mutable=["centre"])
    caches = jax.tree_util.tree_map(
        lambda a, v: lax.dynamic_update_slice(a, v[..., None, None, :].astype(a.dtype),
                                              at(a, r + pad, col + pad)),
        caches, dict(new["centre"]))
    value = jnp.where(fixed[p], cur, draw(t, o))
    first = caches["u_init"]["input"]    # the first layer's input at (r, c): the new pixel
    xin = images.to_centered(value, model.num_bins, first.dtype)
    xin = jnp.concatenate([xin, jnp.ones_like(xin[..., :1])], axis=-1)
    caches = {**caches, "u_init": {"input": _set_pixel(first, r + pad, col + pad, xin)}}
    return _set_pixel(canvas, r, col, value), caches, _set_pixel(outs, r, col, o)

  canvas, _, outs = lax.fori_loop(0, h * w, body, (canvas, caches, outs0))
  return (canvas, outs) if return_outputs else canvas
