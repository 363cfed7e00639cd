"""Every experiment config loads, with its own and the shared variants (``:bf16``,
``:remat``, combined with ``+``), and builds its model; misspelt variants are errors that
name the choices."""

from __future__ import annotations

import glob
import json
import os

import jax
import jax.numpy as jnp
import pytest

import dgmjax
from dgmjax.data import datasets
from dgmjax.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py"))
                 if not p.endswith("__init__.py"))
MODEL_CONFIGS = [p for p in CONFIGS if not os.path.basename(p).startswith("independent")]


def _model(c):
  """The model the training loop would build for config c (data shape and levels from
  the dataset's spec, without loading it)."""
  kw = {k: v for k, v in c.model.items() if k != "name"}
  if c.data.name == "digits":
    shape, bins = (8, 8, 1), 17
  else:
    spec = datasets._TFDS[c.data.name]  # pylint: disable=protected-access
    shape, bins = spec.image_shape, spec.num_bins
  if c.data.pad_to:
    shape = (c.data.pad_to, c.data.pad_to, shape[2])
  if c.data.binarize:
    bins = 2
  elif c.data.n_bits:
    bins = 2 ** c.data.n_bits
  return dgmjax.models.create(c.model.name, shape, bins, **kw)


def test_at_least_one_config_per_model():
  names = {os.path.basename(p).split("_")[0] for p in MODEL_CONFIGS}
  assert names == {"glow", "lmconv", "nvae"}


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=os.path.basename)
def test_shared_variants_set_the_compute_keys(path):
  plain = config_lib.load_config(path)
  assert plain.model.compute.dtype == "float32" and plain.model.compute.remat in ("none", "full")
  both = config_lib.load_config(path + ":smoke+bf16+remat+unroll")
  assert (both.model.compute.dtype, both.model.compute.remat, both.model.compute.unroll) == \
      ("bfloat16", "full", 0)
  smoke = config_lib.load_config(path + ":smoke")
  assert {k: v for k, v in both.model.items() if k != "compute"} == \
      {k: v for k, v in smoke.model.items() if k != "compute"}
  model = _model(both)
  assert model.compute.dtype == "bfloat16" and model.compute.unroll is True
  # the paper-size bf16 model builds (shapes only: nothing is computed)
  assert _model(config_lib.load_config(path + ":bf16")) is not None
  with pytest.raises(ValueError, match="unknown variant 'bf61'"):
    config_lib.load_config(path + ":bf61")


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=os.path.basename)
def test_every_constructor_argument_and_compute_key_is_a_config_key(path):
  import dataclasses
  name = os.path.basename(path).split("_")[0]
  c = config_lib.load_config(path)
  fields = {f.name for f in dataclasses.fields(dgmjax.models.model_class(name)) if f.init}
  assert fields - {"image_shape", "num_bins"} == set(c.model) - {"name"}
  with c.unlocked():
    c.model.compute.conv = "bogus"
  with pytest.raises(ValueError, match="compute.conv must be one of"):
    _model(c)


@pytest.mark.slow
def test_bf16_variant_compiles_and_runs_a_smoke_model():
  c = config_lib.load_config(os.path.join(ROOT, "experiments", "configs",
                                          "glow_cifar10.py:smoke+bf16"))
  model = _model(c)
  x = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  loss, _ = jax.jit(model.loss)(v, x, jax.random.PRNGKey(1))
  assert bool(jnp.isfinite(loss))


def test_shared_variants_refused_where_they_do_not_apply():
  with pytest.raises(ValueError, match="apply to"):
    config_lib.load_config(os.path.join(ROOT, "experiments", "configs",
                                        "independent_digits.py:bf16"))


@pytest.mark.parametrize("name,overrides,check", [
    ("glow_digits.py", ["--config.model.num_classes=10", "--config.model.compute.unroll=0",
                        "--config.model.compute.conv=xla",
                        "--config.model.compute.remat=reversible"],
     lambda m: (m.num_classes == 10 and m.compute.unroll is True and m.compute.conv == "xla"
                and m.compute.reversible)),
    ("lmconv_digits.py", ["--config.model.per_example_orders=True",
                          "--config.model.compute.remat=dots_saveable"],
     lambda m: m.per_example_orders is True and m.compute.remat == "dots_saveable"),
    ("nvae_digits.py", ["--config.model.compute.depthwise=shift_vjp"],
     lambda m: m.compute.depthwise == "shift_vjp")])
def test_command_line_overrides_reach_the_model(name, overrides, check):
  # As the CLI parses them: absl flags with ml_collections' config file flag.
  from absl import flags
  from ml_collections import config_flags
  fl = flags.FlagValues()
  path = os.path.join(ROOT, "experiments", "configs", name) + ":smoke"
  argv = ["dgmjax", f"--config={path}"] + overrides
  config_flags.DEFINE_config_file("config", None, "", flag_values=fl, lock_config=True,
                                  sys_argv=argv)
  fl(argv)
  assert check(_model(fl.config))


def test_a_stored_config_with_the_former_reversible_key_still_builds():
  """Workdirs written before ``reversible`` moved into ``model.compute.remat`` keep
  working: the stored key is read as the compute setting (and False as the default)."""
  from dgmjax.commands.workdirs import config_from_json
  c = config_lib.load_config(os.path.join(ROOT, "experiments", "configs", "glow_digits.py"))
  for old, remat, keep_compute in ((True, "reversible", True), (False, "none", True),
                                   (True, "reversible", False)):
    d = c.to_dict()
    d["model"]["reversible"] = old
    if not keep_compute:  # a config stored before model.compute existed
      del d["model"]["compute"]
    stored = config_from_json(json.dumps(d))
    assert "reversible" not in stored.model
    assert _model(stored).compute.remat == remat
