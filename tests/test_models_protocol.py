"""Every registered model satisfies the protocol the loop relies on, and no model
package imports another model package (shared layers live in dgmjax/nn)."""

import ast
import collections
import dataclasses
import os

import jax
import numpy as np
import pytest

from dgmjax import models
from dgmjax.image_model import ImageModel
from tests.jaxpr_walk import equations

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


def _how(name, **compute):
  """``compute=`` for a model on ``dgmjax.nn.compute.Compute``, else the legacy per-field
  keys (dtype=, remat=) of a model not migrated yet."""
  if "compute" in {f.name for f in dataclasses.fields(models.model_class(name))}:
    return {"compute": compute}
  return compute


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


# Stated tolerance: the bits/dim of a bfloat16 model (its networks compute in bfloat16,
# 8 mantissa bits) lie within 0.1% of the float32 model's on the same parameters, data and
# noise; parameters, log-determinants and likelihood sums stay float32. The parameters
# are the init's plus N(0, 0.05^2) noise, so that the zero-initialised output layers
# (Glow's zero convs) do not make the networks' contribution vanish. Measured on these
# tiny models: 5e-6 (glow), 6e-5 (lmconv), 4e-5 (nvae) relative.
BF16_RTOL = 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glow", "lmconv", "nvae"])
def test_bfloat16_loss_at_init_matches_float32(name):
  import jax.numpy as jnp
  x = np.random.RandomState(0).randint(0, 16, (4, 8, 8, 1)).astype(np.uint8)
  f32 = models.create(name, image_shape=(8, 8, 1), num_bins=16, **TINY[name])
  bf16 = models.create(name, image_shape=(8, 8, 1), num_bins=16, **_how(name, dtype="bfloat16"),
                       **TINY[name])
  v = jax.jit(f32.init)(jax.random.PRNGKey(0), x)
  rs = np.random.RandomState(2)      # numpy noise: no compile per parameter shape
  v = {**v, "params": jax.tree_util.tree_map(
      lambda p: np.asarray(p) + 0.05 * rs.standard_normal(p.shape).astype(np.float32),
      v["params"])}
  l32 = float(jax.jit(lambda v: f32.loss(v, x, jax.random.PRNGKey(1))[0])(v))
  l16, g = jax.jit(jax.value_and_grad(
      lambda p: bf16.loss({**v, "params": p}, x, jax.random.PRNGKey(1))[0]))(v["params"])
  l16 = float(l16)
  # the option reaches the computation: the bf16 model computes in bf16, the f32 one not
  assert "bfloat16" in {str(getattr(v_.aval, "dtype", "")) for e in equations(
      lambda v: bf16.loss(v, x, jax.random.PRNGKey(1))[0], v) for v_ in e.outvars}
  assert "bfloat16" not in {str(getattr(v_.aval, "dtype", "")) for e in equations(
      lambda v: f32.loss(v, x, jax.random.PRNGKey(1))[0], v) for v_ in e.outvars}
  print(f"{name}: float32 {l32:.5f} bfloat16 {l16:.5f} rel {abs(l16 - l32) / l32:.2e}")
  assert np.isfinite(l16) and abs(l16 - l32) <= BF16_RTOL * abs(l32)
  for leaf in jax.tree_util.tree_leaves(g):
    assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))
  for leaf in jax.tree_util.tree_leaves(jax.jit(bf16.init)(jax.random.PRNGKey(0), x)["params"]):
    assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("name", ["glow", "lmconv", "nvae"])
def test_float16_is_refused_with_its_reason(name):
  with pytest.raises(ValueError, match="dtype float16 needs loss scaling"):
    models.create(name, image_shape=(8, 8, 1), num_bins=16, **_how(name, dtype="float16"),
                  **TINY[name])
  with pytest.raises(ValueError, match="dtype must be one of"):
    models.create(name, image_shape=(8, 8, 1), num_bins=16, **_how(name, dtype="int8"),
                  **TINY[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glow", "lmconv", "nvae"])
def test_remat_policies_keep_loss_and_gradient(name):
  """``remat`` (True, "full", a jax.checkpoint_policies name) changes what the backward
  pass stores, never the gradient; a misspelt policy is an error naming the choices."""
  x = np.random.RandomState(0).randint(0, 16, (2, 8, 8, 1)).astype(np.uint8)
  make = lambda r: models.create(name, image_shape=(8, 8, 1), num_bins=16, **_how(name, remat=r),
                                 **TINY[name])
  base = make("none")
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  v = jax.jit(base.init)(jax.random.PRNGKey(0), x)
  grad = lambda m: jax.jit(jax.value_and_grad(
      lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(1))[0]),
      compiler_options=fast)(v["params"])
  l0, g0 = grad(base)

  def policies(m):   # policy -> count of the rematerialised blocks in the traced gradient
    return collections.Counter(repr(e.params.get("policy")) for e in equations(
        jax.grad(lambda p: m.loss({**v, "params": p}, x, jax.random.PRNGKey(1))[0]),
        v["params"]) if e.primitive.name in ("remat2", "checkpoint"))
  own = policies(base)   # kernels' own jax.checkpoint, if any (Glow's CPU convolutions)
  assert set(own) <= {"None"}
  for remat in (True, "dots_with_no_batch_dims_saveable"):
    want = None if remat is True else getattr(jax.checkpoint_policies, remat)
    added = policies(make(remat)) - own
    assert repr(want) in added and set(added) <= {repr(want), "None"}, added
    l1, g1 = grad(make(remat))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           g1, g0)
  with pytest.raises(ValueError, match="remat must be one of"):
    make("dots_savable")
