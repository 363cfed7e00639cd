"""How a model runs, apart from what it is: one frozen value, validated once.

A model's hyper-parameters say what it computes; ``Compute`` says how: the arithmetic's
dtype, what the backward pass stores (remat), how far repeated blocks are unrolled, and
which formulation of the convolutions runs. None of it changes the function a model
computes (up to float rounding) or its parameter tree, so a checkpoint trained with one
setting runs with any other.

    compute = Compute(dtype="bfloat16", remat="full", unroll=1, conv="auto", depthwise="auto")
    model = dgmjax.models.create("glow", image_shape=(32, 32, 3), compute=compute)
    # or from a config: --config.model.compute.conv=xla

Networks receive it by composition: the model hands the one value down and each layer
calls ``compute.conv_same`` / ``compute.depthwise_conv`` / ``compute.cast`` instead of carrying the
switches itself; repeated blocks run through ``dgmjax.nn.repeat``, which reads ``remat``
and ``unroll``.

Keys (``KEYS``; the config's ``model.compute`` holds the same names):

- ``dtype``: "float32" | "bfloat16" (| "float64" for x64 tests): the networks' compute
  dtype. Parameters, log-determinants and likelihood sums stay float32. float16 is
  refused (no loss scaling).
- ``remat``: what the backward pass of a repeated block stores (``dgmjax.nn.remat``):
  "none" (everything), "full" (only the block's input; recompute the rest) or a
  ``jax.checkpoint_policies`` name. ``False``/``True`` are read as "none"/"full".
  "reversible" stores nothing per block: the backward pass rebuilds each block's input
  from its output with the block's inverse (``dgmjax.nn.repeat.reversible``), so the
  gradient's activation memory is flat in depth. Only for stacks of bijections (Glow's
  steps of flow, ``dgmjax.flows.reversible``); reverse mode only; models whose blocks are
  not invertible refuse it (``Compute.make(..., invertible=False)``).
- ``unroll``: blocks per iteration of the scan over a stack of blocks, an int >= 1, or
  ``True`` (also spelt 0, the config's form: ``--config.model.compute.unroll=0``) for a
  fully unrolled (straight-line) program: faster steps on CPU, compile time growing with
  depth.
- ``conv``: the stride-1 'same' convolutions (``dgmjax.nn.conv.IMPLS``): "auto" (XLA on
  GPU/TPU, the matmul formulations on CPU), "xla", "matmul", "xla_matmul".
- ``depthwise``: NVAE's depthwise convolutions (``dgmjax.nn.depthwise.IMPLS``): "auto"
  (shift on CPU, grouped on GPU/TPU), "shift", "shift_vjp" (a hand-written backward
  pass, faster per layer on CPU; reverse mode only), "grouped".

Every choice but ``depthwise="shift_vjp"`` and ``remat="reversible"`` works under every
JAX transformation, forward mode included.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from dgmjax.nn import conv as conv_lib
from dgmjax.nn import depthwise as depthwise_lib
from dgmjax.nn import remat as remat_lib

DTYPES = ("float32", "bfloat16", "float64")
KEYS = ("dtype", "remat", "unroll", "conv", "depthwise")


def _bad(key: str, choices, value) -> ValueError:
  return ValueError(f"compute.{key} must be one of {list(choices)}; got {value!r}")


def _dtype_name(d) -> str:
  try:
    name = d if isinstance(d, str) else jnp.dtype(d).name
  except TypeError:
    name = None
  if name == "float16":
    raise ValueError("compute.dtype float16 needs loss scaling, which dgmjax does not "
                     "implement; use bfloat16 (same memory, float32's exponent range)")
  if name not in DTYPES:
    raise _bad("dtype", DTYPES, d)
  return name


REVERSIBLE = "reversible"
REMATS = tuple(c for c in remat_lib.CHOICES if not isinstance(c, bool)) + (REVERSIBLE,)


def _remat_name(value) -> str:
  if isinstance(value, bool):
    return "full" if value else "none"
  if isinstance(value, str) and value in REMATS:
    return value
  raise _bad("remat", REMATS, value)


def _unroll(value) -> int | bool:
  if value is True or (not isinstance(value, bool) and value == 0):
    return True
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"compute.unroll must be an int >= 1 (blocks per scan iteration) or "
                     f"True / 0 (fully unrolled); got {value!r}")
  return int(value)


@dataclasses.dataclass(frozen=True)
class Compute:
  """dtype, remat, unroll and the convolution kernels: see the module docstring.

  Frozen and hashable: a Flax module field and a static argument of ``jax.jit``.
  """
  dtype: str = "float32"
  remat: str = "none"
  unroll: int | bool = 1
  conv: str = "auto"
  depthwise: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "dtype", _dtype_name(self.dtype))
    object.__setattr__(self, "remat", _remat_name(self.remat))
    object.__setattr__(self, "unroll", _unroll(self.unroll))
    if self.conv not in conv_lib.IMPLS:
      raise _bad("conv", conv_lib.IMPLS, self.conv)
    if self.depthwise not in depthwise_lib.IMPLS:
      raise _bad("depthwise", depthwise_lib.IMPLS, self.depthwise)

  @classmethod
  def make(cls, value: Compute | Mapping[str, Any] | None = None, *,
           invertible: bool = True, model: str = "this model") -> Compute:
    """A ``Compute`` from itself, None (the defaults) or a mapping of ``KEYS`` (a config's
    ``model.compute``); an unknown key is one line naming it and the keys. A model whose
    repeated blocks are not bijections passes ``invertible=False`` (and its ``model``
    name): ``remat="reversible"`` is then one line saying so."""
    if value is None:
      value = cls()
    elif not isinstance(value, cls):
      if not isinstance(value, Mapping) and not hasattr(value, "items"):
        raise ValueError(f"compute must be a Compute or a mapping with keys {list(KEYS)}; "
                         f"got {value!r}")
      items = dict(value.items())
      unknown = sorted(set(items) - set(KEYS))
      if unknown:
        raise ValueError(f"unknown compute key(s) {unknown}; expected {list(KEYS)}")
      value = cls(**items)
    if value.reversible and not invertible:
      raise ValueError(f"compute.remat='reversible' needs invertible blocks (Glow's steps of "
                       f"flow); {model}'s are not: use one of "
                       f"{[r for r in REMATS if r != REVERSIBLE]}")
    return value

  def replace(self, **changes) -> Compute:
    return dataclasses.replace(self, **changes)

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def reversible(self) -> bool:
    """Whether the backward pass rebuilds block inputs with inverses (``remat="reversible"``)."""
    return self.remat == REVERSIBLE

  @property
  def jnp_dtype(self) -> jnp.dtype:
    """The compute dtype as a numpy dtype object."""
    return jnp.dtype(self.dtype)

  def cast(self, x):
    """x in the compute dtype."""
    return x.astype(self.jnp_dtype)

  def conv_same(self, x, kernel):
    """Stride-1 zero-padded 'same' convolution x [B,H,W,I] (*) kernel [k,k,I,O] -> [B,H,W,O]
    in the compute dtype, with this setting's formulation (``dgmjax.nn.conv``)."""
    return conv_lib.conv_same(self.cast(x), kernel, self.conv)

  def depthwise_conv(self, x, kernel, padding: int, dilation: int = 1, taps=None):
    """Depthwise x [B,H,W,C] (*) kernel [k,k,1,C] in the compute dtype with this setting's
    formulation (``dgmjax.nn.depthwise``)."""
    return depthwise_lib.depthwise_conv(self.cast(x), kernel.astype(self.jnp_dtype), padding,
                                        dilation, self.depthwise, taps)

  def checkpoint(self, module_cls, static_argnums=()):
    """``module_cls`` with ``remat`` applied (``nn.remat`` with the policy), or itself
    (also for "reversible", whose blocks run through ``repeat.reversible`` instead)."""
    remat = "none" if self.reversible else self.remat
    return remat_lib.remat_module(module_cls, remat, static_argnums)


DEFAULT = Compute()
