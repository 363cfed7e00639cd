"""Every registered model satisfies the protocol the loop relies on, and no model
package imports another model package (shared layers live in dgmjax/nn)."""

import ast
import os

import jax
import numpy as np
import pytest

from dgmjax import models
from dgmjax.image_model import ImageModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_PACKAGES = ("flows", "lmconv", "nvae")
TINY = {
    "independent": {},
    "glow": dict(levels=1, steps=1, width=8),
    "lmconv": dict(filters=8, resnets=1),
    "nvae": dict(channels=4, scales=1, groups_per_scale=2, latents_per_group=2,
                 preprocess_blocks=1, preprocess_cells=1, postprocess_blocks=1,
                 postprocess_cells=1),
}


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_meets_the_protocol(name):
  model = models.create(name, image_shape=(8, 8, 1), num_bins=4, **TINY[name])
  models.check_protocol(model)
  assert isinstance(model, ImageModel)
  assert model.num_classes is None and model.num_dims == 64
  x = np.zeros((2, 8, 8, 1), np.uint8)
  with pytest.raises(ValueError, match="not class-conditional"):
    model.init(jax.random.key(0), x, y=np.zeros(2, np.int32))


def test_check_protocol_names_what_is_missing():
  class Half:
    name, image_shape, num_bins, num_classes, num_dims = "half", (1, 1, 1), 2, None, 1

    def init(self, rng, x):
      return {}

  with pytest.raises(TypeError, match="loss"):
    models.check_protocol(Half())


def _imports(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{a.name}" for a in node.names)


def test_no_model_package_imports_another():
  offenders = []
  for pkg in MODEL_PACKAGES:
    for d, _, files in os.walk(os.path.join(ROOT, "dgmjax", pkg)):
      for f in files:
        if not f.endswith(".py"):
          continue
        for mod in _imports(os.path.join(d, f)):
          for other in MODEL_PACKAGES:
            if other != pkg and (mod == f"dgmjax.{other}" or mod.startswith(f"dgmjax.{other}.")):
              offenders.append(f"dgmjax/{pkg}/{f} imports {mod}")
  assert not offenders, offenders
