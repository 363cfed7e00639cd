"""PyTorch parity: the project's rosinality-layout PyTorch Glow and dgmjax's Glow with
the same weights give the same log-likelihood (1e-4 relative) on the same dequantised
input, the same latents and the same inverse; the importer gives the stacked layout
directly, rejects missing, unexpected and mis-shaped keys and reads ``.pt`` files safely;
``stack_steps`` converts dgmjax's former per-step layouts, which the model refuses with one
line naming it."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import dgmjax
from dgmjax import images
from dgmjax.convert.glow import load_glow, stack_steps
from dgmjax.nn.stacking import unstack_tree
from experiments.pytorch import glow as tglow
from tests.flows.glow_util import fast_jit

IMAGE = (8, 8, 2)   # H, W, C
NUM_BINS = 32


def _torch_glow(affine: bool, seed: int):
  """A tiny torch Glow, ActNorm-initialised on data, every parameter then perturbed."""
  torch.manual_seed(seed)
  model = tglow.Glow(IMAGE[2], n_flow=2, n_block=2, affine=affine, conv_lu=True, filter_size=16)
  with torch.no_grad():
    model(torch.rand(16, IMAGE[2], IMAGE[0], IMAGE[1]) - 0.5)  # data-dependent init
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


@pytest.fixture(scope="module", params=["affine", "additive"])
def pair(request):
  tmodel = _torch_glow(request.param == "affine", seed=1)
  jmodel = dgmjax.models.create("glow", IMAGE, NUM_BINS, levels=2, steps=2, width=16,
                                coupling=request.param, permutation="lu")
  variables = load_glow({k: v.clone() for k, v in tmodel.state_dict().items()}, jmodel)
  return tmodel, jmodel, variables


def _nchw(a):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(a), (0, 3, 1, 2))))


def test_same_log_likelihood_latents_and_inverse(pair):
  tmodel, jmodel, variables = pair
  x = jnp.asarray(np.random.RandomState(0).randint(0, NUM_BINS, (4,) + IMAGE), jnp.uint8)
  rng = jax.random.PRNGKey(7)
  logp_j = fast_jit(lambda v, x, r: jmodel.log_prob(v, x, r))(variables, x, rng)
  y = images.dequantize(rng, x, NUM_BINS)  # the same noise dgmjax drew
  with torch.no_grad():
    log_p, log_det, zs_t = tmodel(_nchw(y))
  d = math.prod(IMAGE)
  logp_t = (log_p + log_det).numpy() - d * math.log(NUM_BINS)
  np.testing.assert_allclose(np.asarray(logp_j), logp_t, rtol=1e-4)
  zs_j, _ = fast_jit(jmodel.encode)(variables, y)
  for zj, zt in zip(zs_j, zs_t):
    np.testing.assert_allclose(np.transpose(np.asarray(zj), (0, 3, 1, 2)), zt.numpy(),
                               rtol=1e-4, atol=1e-4)
  # the same inverse: both decode the same latents to the same image (and back to y)
  with torch.no_grad():
    x_t = tmodel.reverse([_nchw(z) for z in zs_j], reconstruct=True)
  x_j = fast_jit(jmodel.decode)(variables, zs_j)
  np.testing.assert_allclose(np.transpose(np.asarray(x_j), (0, 3, 1, 2)), x_t.numpy(), atol=1e-4)
  np.testing.assert_allclose(np.asarray(x_j), np.asarray(y), atol=1e-4)


def test_load_from_pt_file(pair, tmp_path):
  tmodel, jmodel, variables = pair
  path = tmp_path / "glow.pt"
  torch.save(tmodel.state_dict(), path)
  loaded = load_glow(str(path), jmodel)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_stacked_layout_and_former_layouts_convert(pair):
  """load_glow stacks each level's K steps (leading [K] axis under blocks_i/flows); the
  former per-step layout (blocks_i/flows_k) and the former scan=True layout
  (blocks_i/flows/scan/step) are refused with one line naming stack_steps, which converts
  both back to the same variables."""
  _, jmodel, variables = pair
  assert variables["params"]["blocks_0"]["flows"]["actnorm"]["loc"].shape == (2, 8)
  assert variables["constants"]["blocks_1"]["flows"]["invconv"]["w_p"].shape == (2, 16, 16)
  per_step = {col: {name: ({**{k: v for k, v in sub.items() if k != "flows"},
                            **{f"flows_{i}": t for i, t in enumerate(unstack_tree(sub["flows"]))}}
                           if name.startswith("blocks_") else sub)
                    for name, sub in tree.items()} for col, tree in variables.items()}
  scanned = {col: {name: ({**sub, "flows": {"scan": {"step": sub["flows"]}}}
                          if name.startswith("blocks_") else sub)
                   for name, sub in tree.items()} for col, tree in variables.items()}
  x = jnp.zeros((1,) + IMAGE, jnp.uint8)
  for old in (per_step, scanned):
    with pytest.raises(ValueError, match=r"dgmjax\.convert\.glow\.stack_steps") as e:
      jmodel.log_prob(old, x, jax.random.PRNGKey(0))
    assert "\n" not in str(e.value)
    jax.tree_util.tree_map(np.testing.assert_array_equal, stack_steps(old), variables)
  jax.tree_util.tree_map(np.testing.assert_array_equal, stack_steps(variables), variables)


def test_bad_state_dicts_are_errors(pair):
  tmodel, jmodel, _ = pair
  sd = dict(tmodel.state_dict())
  missing = {k: v for k, v in sd.items() if k != "blocks.0.flows.1.invconv.w_s"}
  with pytest.raises(ValueError, match="blocks.0.flows.1.invconv.w_s"):
    load_glow(missing, jmodel)
  with pytest.raises(ValueError, match="blocks.9.extra"):
    load_glow({**sd, "blocks.9.extra": torch.zeros(1)}, jmodel)
  shaped = {**sd, "blocks.1.prior.scale": torch.zeros(1, 3, 1, 1)}
  with pytest.raises(ValueError, match="blocks.1.prior.scale"):
    load_glow(shaped, jmodel)
  other = dgmjax.models.create("glow", IMAGE, NUM_BINS, levels=2, steps=2, width=16,
                               coupling=jmodel.coupling, permutation="shuffle")
  with pytest.raises(ValueError, match="permutation"):
    load_glow(sd, other)
  wider = dgmjax.models.create("glow", IMAGE, NUM_BINS, levels=2, steps=2, width=32,
                               coupling=jmodel.coupling)
  with pytest.raises(ValueError, match="coupling.net.0.weight"):
    load_glow(sd, wider)
