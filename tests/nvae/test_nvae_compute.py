"""How NVAE runs (``compute``), apart from what it computes: each scale's groups are one
repeated block with stacked parameters (``dgmjax.nn.repeat``; the executor's own test
holds scan = unroll = loop on a toy body), so

- the training objective (BN in training mode, KL warm-up and balancing, spectral and BN
  regularisers) is the same function with ``unroll=True`` as with the default scan;
- its trace does not grow with ``groups_per_scale``.

(Forward mode through the objective: ``test_nvae_model.py``.)
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from dgmjax import models
from dgmjax.nn.compute import Compute

# One scale, 3 groups (2 of them one stacked block), an IAF pair: the masked depthwise
# and the 3x3 samplers run inside the repeated block.
KW = dict(channels=4, scales=1, groups_per_scale=3, latents_per_group=2, cells_per_group=1,
          preprocess_blocks=1, preprocess_cells=1, postprocess_blocks=1, postprocess_cells=1,
          num_flows=1, use_se=False, weight_decay_norm=1e-2, kl_warmup_steps=10,
          kl_const_steps=1)
SHAPE = (8, 8, 1)
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _model(compute=None, **kw):
  return models.create("nvae", SHAPE, 17, compute=compute, **{**KW, **kw})


@pytest.fixture(scope="module")
def setup():
  model = _model()
  x = np.random.RandomState(0).randint(0, 17, (4,) + SHAPE).astype(np.uint8)
  v = jax.jit(model.init, compiler_options=FAST)(jax.random.PRNGKey(0), x)
  rs = np.random.RandomState(1)         # parameters moved off their init (no compile)
  v = {**v, "params": jax.tree_util.tree_map(
      lambda a: np.asarray(a) + 0.05 * rs.standard_normal(a.shape).astype(np.float32),
      v["params"])}
  return x, v


def _objective(model, v, x):
  def f(p):
    loss, aux = model.loss({**v, "params": p}, x, jax.random.PRNGKey(3), step=4)
    return loss, aux
  return f


@pytest.mark.slow
def test_unroll_gives_the_same_objective_and_state(setup):
  x, v = setup
  run = lambda m: jax.jit(_objective(m, v, x), compiler_options=FAST)(v["params"])
  (l0, aux0), (l1, aux1) = run(_model()), run(_model(Compute(unroll=True)))
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  assert float(aux0["metrics"]["spectral_loss"]) > 0 and float(aux0["metrics"]["kl_coeff"]) < 1
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         (aux1["metrics"], aux1["state"]), (aux0["metrics"], aux0["state"]))


def test_trace_is_flat_in_groups(setup):
  """The objective's jaxpr is the same size at 2 and 6 groups per scale (it holds the
  groups' loops), and the parameter tree has as many arrays."""
  x, _ = setup
  sizes = []
  for g in (2, 6):
    m = _model(groups_per_scale=g)
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
    jaxpr = jax.make_jaxpr(lambda v: m.loss(v, x, jax.random.PRNGKey(1), step=4)[0])(v)
    assert sum(e.primitive.name == "scan" for e in jaxpr.jaxpr.eqns) >= 2
    sizes.append((len(jaxpr.jaxpr.eqns), len(jax.tree_util.tree_leaves(v))))
  assert sizes[0] == sizes[1]
