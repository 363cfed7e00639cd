"""LMConv: an any-order PixelCNN++ with locally masked convolutions (the model protocol).

Jain, Abbeel & Pathak 2020, "Locally Masked Convolution for Autoregressive Models"
(ajayjain/lmconv). For a generation order pi (int [H*W] of flat pixel indices),

    log p_pi(x) = sum_t log p(x_{pi_t} | x_{pi_<t}),

each conditional given by the network of ``network.py`` under the order's masks and a
head of ``heads.py`` (all channels of a pixel jointly). Training draws one order per
batch from the configured set (as the official code), or one per example with
``per_example_orders=True``. Evaluation: the exact log-likelihood under one order, or the
order ensemble ``log (1/N) sum_k p_{pi_k}(x)`` (log-mean-exp, as the paper; ``ensemble``).

    model = dgmjax.models.create("lmconv", image_shape=(8, 8, 1), num_bins=17,
                                 filters=32, resnets=1, orders=("s_curve:all",))
    variables = model.init(rng, x)
    model.conditional_log_prob(variables, x, order="hilbert")   # [B,H,W] nats
    model.log_prob(variables, x, rng)                           # [B], ensemble
    model.sample(variables, rng, 16)                            # uint8 [16,H,W,C]
    model.complete(variables, rng, x, observed_mask)            # uint8 [B,H,W,C]

``order`` arguments everywhere accept None (the first configured order; for
``log_prob``, the ensemble), an int (index into the configured orders), a spec string
(``orders.parse``: "raster", "hilbert:5", ...) or a permutation int [H*W] (may be traced).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import images
from dgmjax.image_model import ImageModel, check_temperatures
from dgmjax.lmconv import ensemble, heads, masks as masks_lib, orders as orders_lib, sampling
from dgmjax.lmconv.network import FullEngine, LMConvNetwork, check_layout
from dgmjax.nn.compute import Compute
from dgmjax.nn.init import fast_init_key

NORMALIZATIONS = ("pono", "weight_norm", "none")


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True)
class LMConvModel(ImageModel):
  """Hyper-parameters (all validated; ValueError otherwise):

  filters, resnets: F and R of the backbone (paper: 160 and 5).
  mixtures: logistic mixture components of the ``dmol`` head (10).
  kernel_size, max_dilation: masked kernels k x k; dilation of the 4 middle layers (3, 2).
  orders: tuple of order specs (``orders.parse``), e.g. ("s_curve:all",) = 8 s-curves.
  normalization: "pono" (paper), "weight_norm" or "none".
  dropout: Dropout2d rate in the resnets (official default 0.5).
  head: "auto" | "dmol" | "softmax" | "bernoulli" (``heads``).
  mask_weight: the official learned weight on the mask (``--learn_weight_for_masks``).
  conv_bias: biases in the masked convolutions.
  per_example_orders: training draws one order per example instead of per batch.
  compute: how it runs (``dgmjax.nn.compute.Compute``, a mapping of its keys, or None
    for the defaults; config ``model.compute``): ``dtype`` of the network's arithmetic
    (params and likelihoods stay float32), ``remat`` of each gated resnet in the backward
    pass, ``unroll`` of each stream's stack of resnets (``network``: the parameters are
    stacked [num, ...] whatever the setting). ``conv`` must be "auto" or "matmul" and
    ``depthwise`` "auto": the locally masked convolutions have one formulation
    (``dgmjax.nn.shift_conv``) and there are no depthwise ones.
  """
  filters: int = 32
  resnets: int = 1
  mixtures: int = 10
  kernel_size: int = 3
  max_dilation: int = 2
  orders: tuple = ("s_curve",)
  normalization: str = "pono"
  dropout: float = 0.5
  head: str = "auto"
  mask_weight: bool = False
  conv_bias: bool = True
  per_example_orders: bool = False
  compute: Compute | Mapping[str, Any] | None = None
  name: str = dataclasses.field(default="lmconv", init=False)

  def __post_init__(self):
    super().__post_init__()
    s = self._set
    h, w, c = self.image_shape
    for key in ("filters", "resnets", "mixtures", "kernel_size", "max_dilation"):
      v = getattr(self, key)
      if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"lmconv: {key} must be a positive int; got {v!r}")
    if self.kernel_size % 2 != 1:
      raise ValueError(f"lmconv: kernel_size must be odd; got {self.kernel_size}")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"lmconv: normalization must be one of {NORMALIZATIONS}; "
                       f"got {self.normalization!r}")
    if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lmconv: dropout must be a float in [0, 1); got {self.dropout!r}")
    for key in ("mask_weight", "conv_bias", "per_example_orders"):
      if not isinstance(getattr(self, key), bool):
        raise ValueError(f"lmconv: {key} must be a bool; got {getattr(self, key)!r}")
    compute = Compute.make(self.compute, invertible=False, model="lmconv")
    if compute.conv not in ("auto", "matmul") or compute.depthwise != "auto":
      raise ValueError(f"lmconv: compute.conv must be 'auto' or 'matmul' and compute.depthwise "
                       f"'auto' (one formulation of the locally masked convolutions, no "
                       f"depthwise ones); got {compute.conv!r}, {compute.depthwise!r}")
    s("compute", compute)
    if not isinstance(self.orders, (tuple, list)):
      raise ValueError(f"lmconv: orders must be a tuple of specs, e.g. ('s_curve:all',); "
                       f"got {self.orders!r}")
    specs = tuple(o if isinstance(o, str) else tuple(int(i) for i in orders_lib.validate(o, h, w))
                  for o in self.orders)
    s("orders", specs)
    s("_order_array", orders_lib.parse_all(list(specs), h, w))            # [N, H*W]
    s("_mask_arrays", masks_lib.numpy_network_masks(self._order_array, h, w,
                                                    self.kernel_size, self.max_dilation))
    s("resolved_head", heads.resolve(self.head, c, self.num_bins))
    s("num_outputs", heads.num_outputs(self.resolved_head, c, self.num_bins, self.mixtures))

  # ---- structure ---------------------------------------------------------------------

  @property
  def network(self) -> LMConvNetwork:
    return LMConvNetwork(
        num_outputs=self.num_outputs, filters=self.filters, resnets=self.resnets,
        kernel_size=self.kernel_size, max_dilation=self.max_dilation,
        normalization=self.normalization, dropout=float(self.dropout),
        conv_bias=self.conv_bias, mask_weight=self.mask_weight, compute=self.compute)

  @property
  def order_array(self) -> np.ndarray:
    """The configured orders, int32 [N, H*W]."""
    return self._order_array

  def _order(self, order):
    """int32 [H*W] (numpy if concrete) for an ``order`` argument (see the module doc)."""
    h, w, _ = self.image_shape
    if order is None:
      return self._order_array[0]
    if isinstance(order, (int, np.integer)) and not isinstance(order, bool):
      if not 0 <= order < len(self._order_array):
        raise ValueError(f"order index {order} out of range: {len(self._order_array)} "
                         f"configured orders")
      return self._order_array[order]
    if isinstance(order, str):
      parsed = orders_lib.parse(order, h, w)
      if len(parsed) != 1:
        raise ValueError(f"order {order!r} names {len(parsed)} orders; expected one")
      return parsed[0]
    if _is_concrete(order):
      return orders_lib.validate(np.asarray(order), h, w)
    if order.shape != (h * w,):
      raise ValueError(f"order must be int [H*W] = [{h * w}]; got shape {order.shape}")
    return order.astype(jnp.int32)

  def _masks_for(self, order):
    h, w, _ = self.image_shape
    o = self._order(order)
    if isinstance(o, np.ndarray):
      idx = [i for i in range(len(self._order_array))
             if np.array_equal(self._order_array[i], o)]
      if idx:
        return tuple(jnp.asarray(m[idx[0]]) for m in self._mask_arrays)
    return masks_lib.network_masks(o, h, w, self.kernel_size, self.max_dilation)

  def order_masks(self, orders=None):
    """The network masks of N orders, each array stacked on a leading axis [N, ...]
    (``masks.numpy_network_masks``): the configured orders' (built once) for None, else
    those of ``orders`` (int [N, H*W], or a sequence of ``order`` arguments; concrete),
    computed eagerly even where it is called inside a traced function (constants)."""
    if orders is None:
      return tuple(jnp.asarray(m) for m in self._mask_arrays)
    h, w, _ = self.image_shape
    arr = np.stack([np.asarray(self._order(o)) for o in orders])
    with jax.ensure_compile_time_eval():
      masks = masks_lib.numpy_network_masks(arr, h, w, self.kernel_size, self.max_dilation)
    return tuple(jnp.asarray(m) for m in masks)

  def masked_log_prob(self, variables, x, masks):
    """[B] log p_pi(x) in nats under the order whose network masks are ``masks`` (one
    order's, as an element of ``order_masks``)."""
    return self._pixel_log_probs(self._forward(variables["params"], x, masks), x).sum(
        axis=(1, 2))

  def _forward(self, params, x, masks, train=False, rng=None):
    """x: uint8 [B,H,W,C] -> head outputs float32 [B,H,W,n_out]."""
    check_layout(params)
    xc = images.to_centered(x, self.num_bins, self.compute.jnp_dtype)
    rngs = {"dropout": rng} if (train and self.dropout > 0) else {}
    return self.network.apply({"params": params}, xc, FullEngine(masks), not train, rngs=rngs)

  def _pixel_log_probs(self, out, x):
    return heads.log_prob(self.resolved_head, out, x, self.num_bins, self.mixtures)

  # ---- protocol ----------------------------------------------------------------------

  def init(self, rng, x, y=None):
    self.check_labels(y)
    self.check_images(x)
    masks = tuple(m[0] for m in self._mask_arrays)

    @jax.jit
    def init(rng, x):   # compiled: an eager Flax init dispatches op by op (slow)
      xc = images.to_centered(x, self.num_bins, jnp.float32)
      return self.network.init({"params": fast_init_key(rng)}, xc, FullEngine(masks),
                               True)["params"]
    return {"params": init(rng, x)}

  def conditional_log_prob(self, variables, x, order=None):
    """[B,H,W] log p(x_{r,c} | pixels before (r,c) in ``order``), nats (all channels)."""
    self.check_images(x)
    out = self._forward(variables["params"], x, self._masks_for(order))
    return self._pixel_log_probs(out, x)

  def log_prob(self, variables, x, rng=None, order=None, y=None):
    """[B] exact log p(x) in nats: under ``order``, or (None) the configured orders'
    ensemble log (1/N) sum_k p_k(x) (``ensemble``)."""
    del rng
    self.check_labels(y)
    self.check_images(x)
    if order is not None or len(self._order_array) == 1:
      return self.conditional_log_prob(variables, x, order).sum(axis=(1, 2))
    return ensemble.log_mean_exp(ensemble.per_order_log_prob(self, variables, x))

  def loss(self, variables, x, rng, train=True, step=None, y=None):
    """Bits/dim under one random configured order per batch (or per example)."""
    del step
    self.check_labels(y)
    self.check_images(x)
    rng_order, rng_drop = jax.random.split(rng)
    n = len(self._order_array)
    shape = (x.shape[0],) if self.per_example_orders else ()
    idx = jax.random.randint(rng_order, shape, 0, n)
    masks = tuple(jnp.take(jnp.asarray(m), idx, axis=0) for m in self._mask_arrays)
    out = self._forward(variables["params"], x, masks, train=train, rng=rng_drop)
    logp = self._pixel_log_probs(out, x).sum(axis=(1, 2))
    bpd = jnp.mean(self.bits_per_dim(logp))
    return bpd, {"metrics": {"bpd": bpd, "nll_nats": -jnp.mean(logp)}, "state": {}}

  def sample(self, variables, rng, num, order=None, *, mixture_temperature=1.0,
             logistic_temperature=1.0, temperature=1.0, method="cached", y=None):
    """uint8 [num,H,W,C], one compiled loop over the pixels of ``order`` (default the first
    configured). ``method``: "cached" or "naive".

    Temperatures (finite floats > 0; ``heads.sample`` has the formulas): ``temperature``
    for every head (logits / T; for dmol also the logistic scales x T); for the dmol head
    the official ajayjain/lmconv sampler's ``mixture_temperature`` (divides the component
    means, log-scales and coefficient pre-activations) and ``logistic_temperature``
    (multiplies the scales)."""
    self.check_labels(y)
    num = self.check_num(num)
    check_temperatures(mixture_temperature=mixture_temperature,
                       logistic_temperature=logistic_temperature, temperature=temperature)
    h, w, c = self.image_shape
    canvas = jnp.zeros((num, h, w, c), jnp.uint8)
    fixed = jnp.zeros((h * w,), bool)
    return sampling.generate(self, variables["params"], rng, canvas,
                             jnp.asarray(self._order(order)), fixed, method=method,
                             mixture_temperature=mixture_temperature,
                             logistic_temperature=logistic_temperature,
                             temperature=temperature)

  # ---- completion --------------------------------------------------------------------

  def _check_observed(self, observed_mask, batch):
    h, w, _ = self.image_shape
    shape = tuple(getattr(observed_mask, "shape", ()))
    if shape not in ((h, w), (batch, h, w)):
      raise ValueError(f"observed_mask must be bool [H,W] = {(h, w)} or [B,H,W]; got {shape}")
    return jnp.asarray(observed_mask).astype(bool)

  def completion_order(self, observed_mask, order=None):
    """``order`` (default: the first configured) with the observed pixels first:
    int32 [H*W] for a mask [H,W], [B,H*W] for [B,H,W]."""
    base = jnp.asarray(self._order(order))
    obs = jnp.asarray(observed_mask).astype(bool)
    if obs.ndim == 3:
      return jax.vmap(lambda m: orders_lib.observed_first(base, m))(obs)
    return orders_lib.observed_first(base, obs)

  def complete(self, variables, rng, x, observed_mask, order=None, *,
               mixture_temperature=1.0, logistic_temperature=1.0, temperature=1.0,
               method="cached"):
    """Samples the hidden pixels of x given the observed ones.

    x: uint8 [B,H,W,C] (hidden values ignored); observed_mask: bool [H,W] or [B,H,W].
    Returns uint8 [B,H,W,C] equal to x where observed, a sample of
    p(hidden | observed) elsewhere.
    """
    self.check_images(x)
    obs = self._check_observed(observed_mask, x.shape[0])
    check_temperatures(mixture_temperature=mixture_temperature,
                       logistic_temperature=logistic_temperature, temperature=temperature)
    kw = dict(method=method, mixture_temperature=mixture_temperature,
              logistic_temperature=logistic_temperature, temperature=temperature)
    params = variables["params"]
    x = jnp.asarray(x, jnp.uint8)
    if obs.ndim == 2:
      return sampling.generate(self, params, rng, x, self.completion_order(obs, order),
                               obs.reshape(-1), **kw)

    def one(key, xi, oi):
      return sampling.generate(self, params, key, xi[None], self.completion_order(oi, order),
                               oi.reshape(-1), **kw)[0]
    keys = jax.random.split(rng, x.shape[0])
    return jax.vmap(one)(keys, x, obs)

  def hidden_log_prob(self, variables, x, observed_mask, order=None):
    """[B] log p(x_hidden | x_observed) in nats (the completion order's conditionals of
    the hidden pixels); its negative is the conditional NLL of the hidden region."""
    self.check_images(x)
    h, w, _ = self.image_shape
    obs = self._check_observed(observed_mask, x.shape[0])
    comp = self.completion_order(obs, order)
    masks = masks_lib.network_masks(comp, h, w, self.kernel_size, self.max_dilation)
    out = self._forward(variables["params"], x, masks)
    lp = self._pixel_log_probs(out, x)
    return jnp.sum(jnp.where(obs, 0.0, lp), axis=(1, 2))
