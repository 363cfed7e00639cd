"""NVAE cells: masked depthwise taps, weight norm, BN state, up-sampling, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dgmjax.nn import depthwise
from dgmjax.nn.compute import Compute
from dgmjax.nvae import cells, iaf, layers


def test_masked_depthwise_skips_only_zero_taps(monkeypatch):
  # The autoregressive 5x5 depthwise mask: WNConv sums only its nonzero taps, and the
  # result equals the full grouped convolution of the masked, weight-normalised kernel.
  mask = iaf.ar_conv_mask(5, 6, 6, 6, zero_diag=False, mirror=False)
  taps = np.argwhere(np.any(mask != 0, axis=(2, 3)))
  assert 0 < len(taps) < 25
  conv = layers.WNConv(6, 5, padding=2, groups=6, mask=mask)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 6, 6))
  v = conv.init(jax.random.PRNGKey(4), x)
  summed = []
  shift_sum = depthwise._shift_sum  # pylint: disable=protected-access
  monkeypatch.setattr(depthwise, "_shift_sum",
                      lambda *a: summed.append(a[-1]) or shift_sum(*a))
  conv.apply(v, x)
  assert summed == [tuple(map(tuple, taps))]      # only the nonzero taps are computed
  monkeypatch.undo()
  kernel = layers.weight_normalize(v["params"]["kernel"] * mask, v["params"]["log_weight_norm"])
  want = depthwise.depthwise_conv(x, kernel, 2, impl="grouped")
  np.testing.assert_allclose(conv.apply(v, x), want, rtol=1e-5, atol=1e-5)
  gx, gp = jax.grad(lambda x, p: jnp.sum(jnp.sin(conv.apply({"params": p}, x))),
                    argnums=(0, 1))(x, v["params"])

  def grouped(x, p):
    kern = layers.weight_normalize(p["kernel"] * mask, p["log_weight_norm"])
    return jnp.sum(jnp.sin(depthwise.depthwise_conv(x, kern, 2, impl="grouped")))

  wx, wp = jax.grad(grouped, argnums=(0, 1))(x, v["params"])
  np.testing.assert_allclose(gx, wx, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(wp)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weight_norm_conv_matches_formula_and_torch():
  conv = layers.WNConv(4, 3, padding=1, use_bias=True)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 3))
  v = conv.init(jax.random.PRNGKey(2), x)
  p = v["params"]
  w = np.asarray(p["kernel"])
  # Initialised so that the effective kernel is w up to the 1e-2 of log(|w| + 1e-2).
  norm = np.sqrt((w ** 2).sum(axis=(0, 1, 2)))
  np.testing.assert_allclose(np.exp(p["log_weight_norm"]), norm + 1e-2, rtol=1e-6)
  lwn = np.asarray(p["log_weight_norm"]) - 0.3
  w_eff = np.exp(lwn) * w / (norm + 1e-5)
  y = conv.apply({"params": {**p, "log_weight_norm": jnp.asarray(lwn)}}, x)
  wt = torch.from_numpy(w_eff.transpose(3, 2, 0, 1).copy())
  yt = torch.nn.functional.conv2d(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()),
                                  wt, torch.from_numpy(np.array(p["bias"])), padding=1)
  np.testing.assert_allclose(y, yt.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def test_batchnorm_updates_statistics_in_training_only():
  bn = layers.BatchNorm(act=False)
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(3), (8, 4, 4, 5))
  v = bn.init(jax.random.PRNGKey(0), x, train=True)
  np.testing.assert_array_equal(v["batch_stats"]["mean"], 0.0)   # unchanged while initialising
  y, new = bn.apply(v, x, train=True, mutable=["batch_stats"])
  xn = np.asarray(x).reshape(-1, 5)
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.05 * xn.mean(0), rtol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["var"], 0.95 + 0.05 * xn.var(0, ddof=1), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 5).mean(0), 0.0, atol=1e-4)
  y_eval, same = bn.apply(v, x, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(same["batch_stats"]["mean"], v["batch_stats"]["mean"])
  np.testing.assert_allclose(y_eval, x / np.sqrt(1 + layers.BN_EPS), rtol=1e-5)


def test_bilinear_upsample_matches_torch_align_corners():
  x = np.random.RandomState(0).randn(2, 3, 5, 4).astype(np.float32)
  ours = layers.upsample_bilinear(jnp.asarray(x))
  ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), scale_factor=2,
                                        mode="bilinear", align_corners=True)
  np.testing.assert_allclose(ours, ref.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cell_shapes_and_skip_scale():
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 4, 4, 8))
  for cell_type, f, out in (("down_enc", 16, (2, 2, 2, 16)), ("up_dec", 4, (2, 8, 8, 4))):
    cell = cells.Cell(f, cell_type)
    y, _ = cell.init_with_output(jax.random.PRNGKey(5), x, False)
    assert y.shape == out, cell_type
  # A normal cell is x + 0.1 * SE(f(x)); with f's last BN giving the constant 2 (scale 0,
  # bias 2) and no SE, the output is exactly x + 0.2.
  cell = cells.Cell(8, "normal_dec", use_se=False)
  v = cell.init(jax.random.PRNGKey(6), x, False)
  params = jax.tree_util.tree_map(lambda a: a, v["params"])
  params["ops_0"]["bn_out"] = {"scale": jnp.zeros(8), "bias": jnp.full((8,), 2.0)}
  y = cell.apply({**v, "params": params}, x, False)
  np.testing.assert_allclose(y, x + 0.2, rtol=1e-6, atol=1e-6)


def test_ar_masks_are_autoregressive():
  """Output channel block i of the centre tap sees input channels < i (<= i without zero_diag);
  rows below the centre are hidden; mirroring flips the kernel."""
  m = iaf.ar_conv_mask(3, 2, 1, 4, zero_diag=True, mirror=False)   # [3,3,I=2,O=4]
  assert m[2].sum() == 0 and m[1, 2].sum() == 0 and m[0].all() and m[1, 0].all()
  np.testing.assert_array_equal(m[1, 1], [[0, 0, 1, 1], [0, 0, 0, 0]])
  m2 = iaf.ar_conv_mask(3, 2, 1, 4, zero_diag=False, mirror=False)
  np.testing.assert_array_equal(m2[1, 1], [[1, 1, 1, 1], [0, 0, 1, 1]])
  mm = iaf.ar_conv_mask(3, 2, 1, 4, zero_diag=True, mirror=True)
  np.testing.assert_array_equal(mm, m[::-1, ::-1])
  # The IAF cell is shift-only and its shift at latent channel c ignores channels >= c.
  cell = iaf.CellAR(num_z=2)
  z = jax.random.normal(jax.random.PRNGKey(7), (1, 4, 4, 2))
  v = cell.init(jax.random.PRNGKey(8), z)
  jac = jax.jacobian(lambda z: cell.apply(v, z)[0][0, 1, 1])(z)[:, 0, 1, 1, :]   # [out c, in c]
  np.testing.assert_allclose(np.diag(jac), 1.0, atol=1e-6)
  assert jac[0, 1] == 0.0


@pytest.mark.slow
def test_compute_kernels_reach_the_cells_and_agree():
  """An encoder cell's 3x3 convolutions run by ``compute.conv`` and a decoder cell's and an
  IAF cell's depthwise 5x5 by ``compute.depthwise``: "xla" traces XLA convolutions,
  "matmul" none, "auto" on CPU the custom-JVP matmul formulations; "grouped" a grouped XLA
  convolution, "shift" none; output and gradients agree between them."""
  from tests.jaxpr_walk import equations
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 8))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 3))
  settings = {"xla": Compute(conv="xla", depthwise="grouped"),
              "matmul": Compute(conv="matmul", depthwise="shift"), "auto": Compute()}
  mods = {k: (cells.Cell(8, "normal_enc", compute=c), iaf.PairedCellAR(3, compute=c),
              cells.Cell(8, "normal_dec", compute=c)) for k, c in settings.items()}
  init = [m.init(jax.random.PRNGKey(2 + i), *a) for i, (m, a) in enumerate(zip(
      mods["xla"], ((x, True), (z,), (x, True))))]

  def loss(params, k):
    y, _ = mods[k][0].apply({**init[0], "params": params[0]}, x, True, mutable=["batch_stats"])
    w, _ = mods[k][1].apply({"params": params[1]}, z)
    d, _ = mods[k][2].apply({**init[2], "params": params[2]}, x, True, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y)) + jnp.sum(jnp.cos(w)) + jnp.sum(jnp.sin(d))

  params = tuple(v["params"] for v in init)
  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  ref_value, ref = value_and_grad(params, "xla")
  for k in ("matmul", "auto"):
    value, grad = value_and_grad(params, k)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                           grad, ref)
  eqs = {k: equations(lambda p: loss(p, k), params) for k in mods}
  convs = lambda k: [e.params["feature_group_count"] for e in eqs[k]
                     if e.primitive.name == "conv_general_dilated"]
  assert sum(g == 1 for g in convs("xla")) >= 4 and sum(g > 1 for g in convs("xla")) == 3
  assert convs("matmul") == []
  assert all(g == 1 for g in convs("auto"))           # shift depthwise on CPU
  custom = lambda k: sum(e.primitive.name.startswith("custom_jvp") for e in eqs[k])
  assert custom("auto") > custom("xla")
