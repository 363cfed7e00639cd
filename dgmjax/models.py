"""The model protocol every dgmjax model implements, and ``create`` by name.

A model is a plain Python object holding its hyper-parameters; all of its methods
are pure functions of explicit ``variables`` (a Flax variable dict: ``params`` plus
any non-trainable collections such as ``batch_stats``) and explicit PRNG keys, so
they can be ``jax.jit``-ed, differentiated and sharded by the caller. Models know
nothing of optimisers, checkpoints or files.

    model = dgmjax.models.create("glow", image_shape=(32, 32, 3), num_bins=256, ...)
    variables = model.init(rng, x)                 # x: uint8 [B,H,W,C]
    loss, aux = model.loss(variables, x, rng, train=True, step=step)
    logp = model.log_prob(variables, x, rng)       # [B] nats
    x = model.sample(variables, rng, num)          # uint8 [num,H,W,C]

``loss`` returns bits/dim (a scalar to minimise; for NVAE it includes the
regularisers) and ``aux = {"metrics": {name: scalar}, "state": {collection: tree}}``
where ``state`` holds the updated non-trainable collections (empty when none).
A model whose likelihood covers fewer dimensions than its input (NVAE scores
binarised MNIST padded to 32x32 on the 28x28 crop) says so with a ``num_dims``
attribute; by default it is H*W*C.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Protocol, runtime_checkable

import jax

Variables = Mapping[str, Any]

# name -> "module:Class"; modules are imported only when the model is created.
_REGISTRY = {
    "independent": "dgmjax.independent:IndependentModel",
    "glow": "dgmjax.flows.model:GlowModel",
    "lmconv": "dgmjax.lmconv.model:LMConvModel",
    "nvae": "dgmjax.nvae.model:NVAEModel",
}


@runtime_checkable
class GenerativeModel(Protocol):
  """What the training loop, the CLI and the benchmarks rely on.

  Every registered model subclasses ``dgmjax.image_model.ImageModel``, which provides
  ``image_shape``, ``num_bins``, ``num_dims``, ``num_classes`` and the input checks.
  ``y`` (int [B] class labels) is required by class-conditional models (``num_classes``
  not None) and refused by the others.
  """

  name: str
  image_shape: tuple[int, int, int]
  num_bins: int
  num_classes: int | None

  @property
  def num_dims(self) -> int:
    """Dimensions the likelihood covers (bits/dim divides by it)."""

  def init(self, rng: jax.Array, x: jax.Array, y: jax.Array | None = None) -> dict:
    """Returns variables; may use the batch ``x`` (uint8 [B,H,W,C]) for data-dependent init."""

  def loss(self, variables: Variables, x: jax.Array, rng: jax.Array, train: bool = True,
           step: Any = None, y: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Scalar training objective in bits/dim and ``{"metrics": ..., "state": ...}``."""

  def log_prob(self, variables: Variables, x: jax.Array, rng: jax.Array,
               y: jax.Array | None = None) -> jax.Array:
    """[B] log-likelihood (or its bound) of the discrete images ``x`` in nats."""

  def sample(self, variables: Variables, rng: jax.Array, num: int,
             y: jax.Array | None = None) -> jax.Array:
    """uint8 [num,H,W,C] samples."""


PROTOCOL_METHODS = ("init", "loss", "log_prob", "sample")


def check_protocol(model) -> None:
  """Raises TypeError unless ``model`` has every member of ``GenerativeModel`` and each
  protocol method accepts ``y=`` (the loop passes labels to conditional models so)."""
  import inspect
  if not isinstance(model, GenerativeModel):
    missing = [m for m in ("name", "image_shape", "num_bins", "num_classes", "num_dims")
               + PROTOCOL_METHODS if not hasattr(model, m)]
    raise TypeError(f"{type(model).__name__} lacks {missing} of the GenerativeModel protocol")
  for method in PROTOCOL_METHODS:
    if "y" not in inspect.signature(getattr(model, method)).parameters:
      raise TypeError(f"{type(model).__name__}.{method} does not take y=")


def names() -> list[str]:
  """The model names ``create`` accepts."""
  return sorted(_REGISTRY)


def model_class(name: str):
  if name not in _REGISTRY:
    raise ValueError(f"unknown model {name!r}; expected one of {names()}")
  module, cls = _REGISTRY[name].split(":")
  return getattr(importlib.import_module(module), cls)


# Former hyper-parameters that now live in ``compute`` (``dgmjax.nn.compute``).
MOVED = {"reversible": "compute=dict(remat='reversible') (config: model.compute.remat)"}


def create(name: str, image_shape, num_bins: int = 256, **hparams) -> GenerativeModel:
  """Builds the model ``name`` for images of ``image_shape`` = (H, W, C).

  Raises ValueError for an unknown name or an unknown/invalid hyper-parameter.
  """
  cls = model_class(name)
  moved = sorted(set(hparams) & set(MOVED))
  if moved:
    raise ValueError(f"{name}: {moved[0]} moved into compute (how the model runs, "
                     f"dgmjax.nn.compute); pass {MOVED[moved[0]]}")
  try:
    return cls(image_shape=image_shape, num_bins=num_bins, **hparams)
  except TypeError as e:  # unexpected keyword from a dataclass constructor
    raise ValueError(f"bad hyper-parameters for model {name!r}: {e}") from None
