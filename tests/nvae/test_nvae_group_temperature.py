"""NVAE's per-group sampling temperature, ``sample_latents`` and ``manipulate`` on the
tiny two-scale model of ``test_nvae_latents`` (G = 3 groups: 1 coarse, 2 fine):

- ``group_temperatures``: a float passes as it is, G values become float32 [G], a wrong
  length or a value that is not finite and > 0 is a one-line ValueError (checked before
  anything runs, so these tests compile nothing);
- a temperature sequence [t]*G samples exactly what the float t samples;
- lowering group j's temperature leaves the groups before it unchanged and moves z_j
  linearly toward the prior mean: z_j(T) = mu_j + T sigma_j eps_j with the same eps;
- ``manipulate`` decodes the posterior means deterministically: alpha = 0 is
  decode(encode(x)), twice the same, and alpha moves the means by alpha d.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import models
from tests.flows.glow_util import fast_jit
from tests.nvae.test_nvae_latents import TINY


def _model():
  return models.create("nvae", image_shape=(8, 8, 1), num_bins=17, **TINY)


def test_group_temperatures_are_checked():
  model = _model()
  assert model.groups == (2, 1)
  assert model.group_temperatures(0.7) == 0.7
  t = model.group_temperatures([0.5, 0.7, 1.0])
  assert t.dtype == jnp.float32 and t.shape == (3,)
  np.testing.assert_allclose(np.asarray(t), [0.5, 0.7, 1.0], rtol=1e-7)
  for bad, match in [([0.5, 0.7], "3 floats"), (np.ones((3, 1)), "3 floats"),
                     ([0.5, 0.0, 1.0], "finite float > 0"), ([1.0, np.nan, 1.0], "finite"),
                     ([1.0, np.inf, 1.0], "finite"), (-1.0, "> 0"), ([True] * 3, "3 floats")]:
    with pytest.raises(ValueError, match=match) as e:
      model.group_temperatures(bad)
    assert "temperature" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ValueError, match="3 floats"):       # before the network runs
    model.sample(None, jax.random.PRNGKey(0), 2, temperature=[1.0, 1.0])
  with pytest.raises(ValueError, match="3 values"):       # a traced array of the wrong size
    jax.eval_shape(model.group_temperatures, jnp.ones(2))


@pytest.mark.slow
def test_per_group_temperature_and_deterministic_manipulation():
  model = _model()
  x = jax.random.randint(jax.random.PRNGKey(0), (3, 8, 8, 1), 0, 17).astype(jnp.uint8)
  v = model.init(jax.random.PRNGKey(1), x)
  r = jax.random.PRNGKey(5)
  s_float, s_seq = fast_jit(lambda v: (model.sample(v, r, 4, 0.8),
                                       model.sample(v, r, 4, [0.8] * 3)))(v)
  chex.assert_trees_all_equal(s_seq, s_float)
  temps = jnp.asarray([[1.0, 1.0, 1.0], [1.0, 1.0, 0.5], [1.0, 1.0, 1e-6]])
  lat = fast_jit(lambda v, t: jax.vmap(lambda tt: model.sample_latents(v, r, 4, tt))(t))
  l1, l_half, l_zero = zip(*lat(v, temps))          # per temperature: G arrays
  chex.assert_shape(l1, [(4,) + s for s in model.latent_shapes()])
  chex.assert_trees_all_equal(l_half[:2], l1[:2])      # the groups before the cooled one
  chex.assert_trees_all_close(l_half[2], (l1[2] + l_zero[2]) / 2, atol=1e-5, rtol=1e-5)
  assert not np.allclose(l_half[2], l1[2])
  # manipulate: deterministic decoding of the posterior means, shifted by alpha d
  d = [jnp.full(s, 0.3, jnp.float32) for s in model.latent_shapes()]
  zs, grid = fast_jit(lambda v, x, d: (model.encode(v, x),
                                       model.manipulate(v, x, d, jnp.asarray([0.0, 0.5]))))(
      v, x, d)
  decode = fast_jit(model.decode)
  assert grid.shape == (3, 2, 8, 8, 1) and grid.dtype == jnp.uint8
  chex.assert_trees_all_equal(grid[:, 0], decode(v, zs), decode(v, zs))
  chex.assert_trees_all_equal(grid[:, 1], decode(v, [z + 0.5 * e for z, e in zip(zs, d)]))


@pytest.mark.slow
def test_sample_command_takes_one_temperature_per_group(tmp_path, capsys):
  """``dgmjax sample --group_temperatures`` on an NVAE workdir: G values sample, a wrong
  count or both temperature flags are one line, and the flag is refused for Glow."""
  from tests.test_research_cli import _error, _initialised, _ok
  workdir = _initialised("nvae", tmp_path / "nvae")
  from dgmjax.commands.workdirs import stored_config
  from dgmjax.train import loop
  g = sum(loop.build(stored_config(workdir), data=False).model.groups)
  ts = ",".join(["1"] * (g - 1) + ["0.5"])
  got = _ok(capsys, "sample", f"--workdir={workdir}", f"--group_temperatures={ts}",
            "--num=2", f"--out={tmp_path / 'out'}")
  assert got["num"] == 2 and np.load(got["npz"])["images"].shape[0] == 2
  assert f"sequence of {g} floats" in _error(capsys, "sample", f"--workdir={workdir}",
                                             "--group_temperatures=1,1,1,1,1,1,1,1,1,1,1,1,1")
  assert "not both" in _error(capsys, "sample", f"--workdir={workdir}", "--temperature=1",
                              f"--group_temperatures={ts}")
  glow = _initialised("glow", tmp_path / "glow")
  assert "nvae" in _error(capsys, "sample", f"--workdir={glow}", "--group_temperatures=1")
