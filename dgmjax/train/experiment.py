"""What a config builds: the model, the data it is trained and scored on, the device mesh.

``build(config)`` reads both splits at once (training needs them); ``build(config,
data=False)`` reads none: each split is read on first use (``exp.train_data``,
``exp.test_data``), so a workdir samples, interpolates and restores with its dataset
absent. The model's image shape and levels then come, without opening a file, from

1. the dataset's description (``dgmjax.data.image_spec(name, n_bits=, pad_to=,
   binarize=)``), else
2. what the checkpoint stores (``meta["image"] = {"shape": [H, W, C], "num_bins": K}``,
   written by ``train`` and ``import``: ``image_meta``), else
3. the test split (a tfds dataset dgmjax has no description of; read once).

The labels count of a class-conditional model is a model hyper-parameter
(``config.model.num_classes``). A split that cannot be read is ``DataUnavailable``
(a ValueError: one line naming the dataset, the config key and how to prepare it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import data as data_lib
from dgmjax import models
from dgmjax.train import state as state_lib


class DataUnavailable(ValueError):
  """A split of the config's dataset cannot be read (not prepared, unknown, damaged)."""


@dataclasses.dataclass
class Experiment:
  """What ``train``/``evaluate``/``sample`` build from a config.

  ``train_split``/``test_split``: the ``ImageData`` of each split, or None until the
  first ``train_data``/``test_data`` reads it from ``config.data``.
  """
  config: Any
  model: Any
  train_split: Any
  test_split: Any
  num_bins: int
  mesh: Any
  preprocess: Any
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def train_data(self):
    if self.train_split is None:
      self.train_split = load_split(self.config, "train")
    return self.train_split

  @property
  def test_data(self):
    if self.test_split is None:
      self.test_split = load_split(self.config, "test")
    return self.test_split

  def read(self, *splits: str) -> None:
    """Reads the named splits ("train", "test") now (``DataUnavailable`` if one cannot be
    read): a command that needs them fails before it does anything else."""
    for split in splits:
      if split not in data_lib.datasets.SPLITS:
        raise ValueError(f"split must be one of {data_lib.datasets.SPLITS}; got {split!r}")
      getattr(self, f"{split}_data")

  def eval_fn(self):
    """The jitted eval step, built once per experiment."""
    if "eval" not in self._compiled:
      self._compiled["eval"] = state_lib.make_eval_step(self.model, mesh=self.mesh,
                                                        preprocess=self.preprocess)
    return self._compiled["eval"]

  def sampler(self, num: int, **static):
    """``fn(variables, rng, **arrays) -> uint8 [num,H,W,C]``, jitted once per
    ``(num, static kwargs)``; array kwargs (labels ``y``) are traced arguments."""
    key = ("sample", num, tuple(sorted(static.items())))
    if key not in self._compiled:
      model = self.model
      self._compiled[key] = jax.jit(
          lambda v, r, arrays: model.sample(v, r, num, **static, **arrays))
    return self._compiled[key]


def model_hparams(config) -> dict:
  hp = config.model.to_dict()
  hp.pop("name")
  return hp


def load_split(config, split: str):
  """``ImageData`` of one split of ``config.data``; ``DataUnavailable`` naming the dataset,
  the config key and (for tfds) how to prepare it when it cannot be read."""
  d = config.data
  try:
    return data_lib.load(d.name, split, data_dir=d.data_dir or None, n_bits=d.n_bits,
                         pad_to=d.pad_to)
  except (ValueError, OSError, ImportError) as e:
    reason = " ".join(str(e).split())
    raise DataUnavailable(f"the {split} split of dataset {d.name!r} (config data.name) is "
                          f"needed here and cannot be read: {reason}") from None


def image_meta(model) -> dict:
  """What a checkpoint stores of the images its model takes: ``{"shape": [H, W, C],
  "num_bins": K}`` (``meta["image"]``)."""
  return {"shape": [int(d) for d in model.image_shape], "num_bins": int(model.num_bins)}


def stored_image(meta) -> tuple[tuple[int, int, int], int] | None:
  """``((H, W, C), K)`` from a checkpoint's meta (``image_meta``), or None when it stores
  none (checkpoints written before it did) or something else."""
  image = (meta or {}).get("image")
  try:
    shape, bins = tuple(int(d) for d in image["shape"]), int(image["num_bins"])
  except (TypeError, KeyError, ValueError):
    return None
  return (shape, bins) if len(shape) == 3 else None


def image_of(config, image=None):
  """((H, W, C), num_bins) the config's model takes, with no data read when it can be
  (module doc): the dataset's description, else ``image`` (stored with a checkpoint), else
  the test split; ValueError naming both when the description and ``image`` differ."""
  d = config.data
  spec = data_lib.image_spec(d.name, n_bits=d.n_bits, pad_to=d.pad_to, binarize=d.binarize)
  if spec is not None and image is not None and tuple(spec) != tuple(image):
    raise ValueError(
        f"the checkpoint's model takes images {list(image[0])} with {image[1]} levels, but "
        f"the config's data (data.name={d.name!r}, n_bits={d.n_bits}, pad_to={d.pad_to}, "
        f"binarize={d.binarize}) deliver {list(spec[0])} with {spec[1]}: pass the config "
        f"the checkpoint was written with (or leave --config out to use the stored one)")
  if spec is None and image is None:
    test = load_split(config, "test")
    spec = tuple(test.image_shape), (2 if d.binarize else test.num_bins)
  return spec or image


def build(config, *, data: bool = True, image=None) -> Experiment:
  """Creates the model a config describes, with its data.

  Args:
    config: a dgmjax config (``model``, ``data`` sections).
    data: True reads both splits now; False reads none (each on first use).
    image: ``((H, W, C), num_bins)`` stored with a checkpoint (``stored_image``), or None;
      with ``data=False`` it is used where the dataset has no description, and checked
      against it where it has one (ValueError naming both when they differ).
  """
  train_split = test_split = None
  if data:
    train_split, test_split = load_split(config, "train"), load_split(config, "test")
    shape, num_bins = tuple(train_split.image_shape), train_split.num_bins
    if config.data.binarize:
      num_bins = 2
  else:
    shape, num_bins = image_of(config, image)
  preprocess = None
  if config.data.binarize:   # dynamic binarisation of the data's levels, known by then
    d = config.data
    spec = None if data else data_lib.image_spec(d.name, n_bits=d.n_bits, pad_to=d.pad_to)
    source_bins = functools.cache(
        lambda: spec[1] if spec else (train_split or load_split(config, "test")).num_bins)
    preprocess = lambda rng, x: data_lib.binarize(rng, x, source_bins())
  model = models.create(config.model.name, image_shape=shape, num_bins=num_bins,
                        **model_hparams(config))
  models.check_protocol(model)
  return Experiment(config, model, train_split, test_split, num_bins, state_lib.data_mesh(),
                    preprocess)


def is_conditional(model) -> bool:
  """Class-conditional models declare ``num_classes`` and take labels as ``y=``."""
  return model.num_classes is not None


def _init_inputs(exp: Experiment):
  """The batch (and labels) data-dependent initialisation sees: the first examples."""
  cfg = exp.config
  rng = jax.random.key(cfg.train.seed)
  n = min(cfg.train.init_batch_size, len(exp.train_data))
  x = exp.train_data.get(np.arange(n))
  if exp.preprocess is not None:
    x = exp.preprocess(jax.random.fold_in(rng, 2), jnp.asarray(x))
  labels = {}
  if is_conditional(exp.model):
    labels = {"y": jnp.asarray(exp.train_data.labels(np.arange(n)), jnp.int32)}
  return jax.random.fold_in(rng, 1), x, labels


def init_state(exp: Experiment, tx):
  """A fresh, replicated ``TrainState`` (runs the model's data-dependent init)."""
  rng, x, labels = _init_inputs(exp)
  variables = exp.model.init(rng, x, **labels)
  return state_lib.replicate(state_lib.create_state(variables, tx), exp.mesh)


def abstract_state(exp: Experiment, tx):
  """``jax.ShapeDtypeStruct`` tree of the ``TrainState`` with replicated shardings: the
  restore target, obtained with ``jax.eval_shape`` (no init is computed, no data read:
  the shapes follow from a zeros batch uint8 [1, H, W, C], and int32 [1] labels)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(exp.model.image_shape), jnp.uint8)
  labels = {"y": jax.ShapeDtypeStruct((1,), jnp.int32)} if is_conditional(exp.model) else {}
  shapes = jax.eval_shape(lambda r, x, l: state_lib.create_state(exp.model.init(r, x, **l), tx),
                          jax.random.key(exp.config.train.seed), x, labels)
  sharding = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)
