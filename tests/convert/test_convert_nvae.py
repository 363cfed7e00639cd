"""The PyTorch NVAE baseline (experiments/pytorch/nvae.py) and the importer
(dgmjax/convert/nvae.py): official parameter layout, strict loading onto the stacked
layout, the old per-layer layout's converter, and parity of the ELBO terms with dgmjax
under shared weights, input and posterior noise."""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dgmjax import images
from dgmjax.convert import nvae as convert
from dgmjax.convert import nvae_layout
from dgmjax.nvae import hierarchy
from dgmjax.nvae import regularizers as reg
from dgmjax.nvae.layers import SPECTRAL_COLLECTION
from experiments.pytorch import nvae as tnvae

# The official parameter layouts (tests/testdata/state_dicts/README.md says where from).
REF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata",
                   "state_dicts")
ARGS = {"mnist_tiny": lambda: tnvae.tiny_args("mnist"),
        "cifar_tiny": lambda: tnvae.tiny_args("cifar10"),
        "mnist_faithful": lambda: tnvae.faithful_args("mnist"),
        "cifar_faithful": lambda: tnvae.faithful_args("cifar10")}


def reference(name):
  with open(os.path.join(REF, f"nvae_{name}.state_dict.json")) as f:
    return json.load(f)


# ---- the PyTorch baseline has the official layout -------------------------------------


@pytest.mark.parametrize("name", ["mnist_tiny", "cifar_tiny", "mnist_faithful", "cifar_faithful"])
def test_state_dict_matches_official_layout(name):
  # The 130.9M-parameter CIFAR model is built on the meta device (shapes only).
  device = "meta" if name == "cifar_faithful" else "cpu"
  with torch.device(device):
    model = tnvae.AutoEncoder(ARGS[name]())
  got = {k: list(v.shape) for k, v in model.state_dict().items()}
  ref = reference(name)
  assert list(got) == list(ref)          # same keys, same order
  assert got == ref                      # same shapes


def test_weight_normalized_aliases_weight():
  model = tnvae.AutoEncoder(tnvae.tiny_args("mnist"))
  sd = model.state_dict()
  aliases = [k for k in sd if k.endswith("weight_normalized")]
  assert aliases
  for k in aliases:
    assert sd[k].data_ptr() == sd[k[:-len("weight_normalized")] + "weight"].data_ptr()
  # An alias is one parameter, not two.
  names = {n for n, _ in model.named_parameters()}
  assert not any(n.endswith("weight_normalized") for n in names)


# ---- shared weights: PyTorch model, converted variables, one jitted dgmjax pass --------


def randomise(model: torch.nn.Module, seed: int):
  """Non-trivial weights and BN statistics (the default init has gamma=1, beta=0, mean=0, var=1)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("log_weight_norm"):
        p.add_(0.1 * torch.randn(p.shape, generator=g))
      elif name == "prior_ftr0":
        p.copy_(torch.randn(p.shape, generator=g))
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
        m.num_batches_tracked.fill_(7)
  return model.eval()


def nhwc(noise):
  return [jnp.asarray(np.transpose(e, (0, 2, 3, 1))) for e in noise]


class Setup:
  """One configuration: the PyTorch model, its converted dgmjax twin, data and noise."""

  def __init__(self, dataset, seed, batch=3):
    torch.manual_seed(seed)
    self.args = tnvae.tiny_args(dataset)
    self.torch_model = randomise(tnvae.AutoEncoder(self.args), seed)
    self.checkpoint = {"state_dict": self.torch_model.state_dict(), "args": self.args,
                       "epoch": 1}
    self.model, self.variables = convert.load_nvae(self.checkpoint)
    rs = np.random.default_rng(seed)
    h, w, c = self.model.image_shape
    if dataset == "mnist":   # binary 28x28 digits padded with zeros to 32x32
      x = np.zeros((batch, h, w, c), np.uint8)
      x[:, 2:30, 2:30] = rs.integers(0, 2, (batch, 28, 28, c))
    else:
      # Both edge levels included. Level 254 is avoided: the official DMOL also gives it
      # the upper tail (centred value 0.992 > 0.99), dgmjax only level 255 (documented in
      # dgmjax/nvae/model.py), so the two likelihoods differ there by design.
      x = rs.integers(0, 256, (batch, h, w, c)).astype(np.uint8)
      x[x == 254] = 253
      x[:, 0, 0] = 0
      x[:, 0, 1] = 255
    self.x = x
    self.torch_x = tnvae.images_to_input(x, self.model.num_bins)
    self.eps = [rs.standard_normal((batch,) + s).astype(np.float32)
                for s in self.torch_model.latent_shapes()]          # NCHW per group
    with torch.no_grad():
      t = tnvae.elbo_terms(self.torch_model, self.torch_x,
                           eps=[torch.from_numpy(e) for e in self.eps])
    self.torch_terms = {k: v.numpy() for k, v in t.items()}
    self.jax_terms = self._jax_terms()

  def _jax_terms(self):
    model = self.model

    @jax.jit
    def run(variables, x, eps):
      (logits, terms), sown = model.net.apply(
          {"params": variables["params"], "batch_stats": variables["batch_stats"]},
          images.to_centered(x, model.num_bins), train=False, eps=eps,
          mutable=[SPECTRAL_COLLECTION])
      recon = -model.recon_log_prob(logits, x)
      return dict(terms, recon=recon, logits=logits,
                  weights=reg.group_weights(sown[SPECTRAL_COLLECTION]))

    return jax.device_get(run(self.variables, jnp.asarray(self.x), nhwc(self.eps)))


@pytest.fixture(scope="module")
def mnist():
  return Setup("mnist", seed=1)


@pytest.fixture(scope="module")
def cifar():
  return Setup("cifar10", seed=2)


@pytest.fixture(params=["mnist", "cifar"])
def setup(request):
  return request.getfixturevalue(request.param)


def test_elbo_terms_match_pytorch(setup):
  """Same weights, BN statistics, input and posterior noise -> same reconstruction
  log-likelihood, KL per group, log q and log p (1e-4 relative)."""
  t, j = setup.torch_terms, setup.jax_terms
  np.testing.assert_allclose(j["logits"], np.transpose(t["logits"], (0, 2, 3, 1)),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(j["recon"], t["recon"], rtol=1e-4)
  np.testing.assert_allclose(j["kl"].T, t["kl"], rtol=1e-4)
  np.testing.assert_allclose(j["log_q"], t["log_q"], rtol=1e-4)
  np.testing.assert_allclose(j["log_p"], t["log_p"], rtol=1e-4)
  nelbo = j["recon"] + j["kl"].sum(0)
  np.testing.assert_allclose(nelbo, t["nelbo"], rtol=1e-4)
  # The terms are not degenerate: every group carries KL and the batch differs.
  assert np.all(t["kl"] > 0) and np.ptp(t["recon"]) > 0


def test_regularisers_see_the_same_weights(setup):
  """The spectral regulariser's kernels (effective, weight-normalised, masked) are the
  official ones: same groups and counts, same largest singular values; BN regulariser equal."""
  tm = setup.torch_model
  torch_groups = {}
  for layer in tm.all_conv_layers:
    w = layer.normalize_weight().detach().reshape(layer.weight.shape[0], -1).numpy()
    torch_groups.setdefault(reg.group_key(w.shape), []).append(w)
  jax_groups = setup.jax_terms["weights"]
  assert sorted(torch_groups) == sorted(jax_groups)
  for k, ws in torch_groups.items():
    assert len(ws) == jax_groups[k].shape[0]
    s_t = np.sort([np.linalg.svd(w, compute_uv=False)[0] for w in ws])
    s_j = np.sort(np.linalg.svd(np.asarray(jax_groups[k], np.float64), compute_uv=False)[:, 0])
    np.testing.assert_allclose(s_j, s_t, rtol=1e-5)
  np.testing.assert_allclose(float(reg.batchnorm_loss(setup.variables["params"])),
                             float(tm.batchnorm_loss().detach()), rtol=1e-6)
  # The imported power-iteration vectors estimate the top singular values of those kernels.
  spec = setup.variables["spectral"]
  assert sorted(spec) == sorted(jax_groups)
  est = sum(float(jnp.einsum("nr,nrc,nc->", spec[k]["u"], jax_groups[k], spec[k]["v"]))
            for k in spec)
  exact = sum(np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[:, 0].sum()
              for w in jax_groups.values())
  assert exact * 0.98 <= est <= exact * (1 + 1e-5)


def test_batch_stats_imported_stacked(mnist):
  """The importer gives the stacked layout: the BN statistics of decoder group j = 1 + p
  sit at index p of their scale's stack; every official BN layer is there once."""
  tm, stats = mnist.torch_model, mnist.variables["batch_stats"]
  bn = tm.pre_process[0]._ops[0].bn_act
  np.testing.assert_array_equal(stats["pre_process_0"]["ops_0"]["bn_act"]["mean"],
                                bn.running_mean.numpy())
  np.testing.assert_array_equal(stats["pre_process_0"]["ops_0"]["bn_act"]["var"],
                                bn.running_var.numpy())
  assert "dec_tower_0" not in mnist.variables["params"]
  where = {v: k for k, v in nvae_layout.map_of(mnist.model).items()}
  got = stats["dec_groups_1"]["cells_0"]["ops_0"]["bn_out"]["var"]    # the finer scale
  assert got.shape[0] == mnist.model.groups[0] == 2
  for p in range(2):
    i = int(where[(("dec_groups_1", "cells_0"), p)].split("_")[-1])   # its dec_tower.i
    np.testing.assert_array_equal(got[p], tm.dec_tower[i]._ops[0].conv[4].bn.running_var)
  n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in tm.modules())
  n_stacked = sum(a.shape[0] if a.ndim == 2 else 1 for a in jax.tree_util.tree_leaves(stats))
  assert n_stacked == 2 * n_bn


def test_kl_warmup_and_balancing_match_pytorch():
  """The training objective's KL weighting (official utils.py) equals dgmjax's."""
  groups = tnvae.groups_per_scale(3, 4, True)
  alpha_t = tnvae.kl_balancer_coeff(3, groups, "square")
  np.testing.assert_allclose(reg.kl_balancer_coeff(groups), alpha_t.numpy(), rtol=1e-6)
  kl = np.random.default_rng(0).gamma(2.0, 3.0, (5, len(alpha_t))).astype(np.float32)
  for step in (0, 30, 200):
    beta = tnvae.kl_coeff(step, 100, 10, 1e-4)
    np.testing.assert_allclose(float(reg.kl_coeff(step, 100, 10, 1e-4)), beta, rtol=1e-6)
    want, gamma_t, _ = tnvae.kl_balancer(list(torch.from_numpy(kl).T), beta, True, alpha_t)
    got, gamma = reg.kl_balancer(jnp.asarray(kl), beta, alpha_t.numpy())
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gamma), gamma_t.numpy(), rtol=1e-5)


# ---- strict, safe loading ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_abstract(mnist):
  return nvae_layout.per_layer_shapes(mnist.model)


def test_missing_key_is_named(mnist, mnist_abstract):
  sd = dict(mnist.checkpoint["state_dict"])
  del sd["dec_tower.1._ops.0.conv.2.conv.0.weight"]
  with pytest.raises(ValueError, match=r"dec_tower\.1\._ops\.0\.conv\.2\.conv\.0\.weight"):
    convert.convert_state_dict(sd, mnist_abstract)
  sd = dict(mnist.checkpoint["state_dict"])
  del sd["pre_process.0._ops.1.bn_act.running_var"]
  with pytest.raises(ValueError, match=r"pre_process\.0\._ops\.1\.bn_act\.running_var"):
    convert.load_nvae({"state_dict": sd, "args": mnist.args})


def test_unexpected_key_is_named(mnist, mnist_abstract):
  sd = dict(mnist.checkpoint["state_dict"])
  sd["enc0.1.extra"] = torch.zeros(3)
  with pytest.raises(ValueError, match=r"enc0\.1\.extra"):
    convert.convert_state_dict(sd, mnist_abstract)


def test_misshaped_key_is_named(mnist, mnist_abstract):
  sd = dict(mnist.checkpoint["state_dict"])
  sd["stem.log_weight_norm"] = torch.zeros(8)
  with pytest.raises(ValueError, match=r"stem\.log_weight_norm.*\(8,\).*\(8, 1, 1, 1\)"):
    convert.convert_state_dict(sd, mnist_abstract)


def test_alias_must_equal_weight_and_may_be_absent(mnist, mnist_abstract):
  key = "dec_tower.1._ops.0.conv.4.weight_normalized"
  sd = dict(mnist.checkpoint["state_dict"])
  sd[key] = sd[key].clone() + 1.0
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    convert.convert_state_dict(sd, mnist_abstract)
  sd = {k: v for k, v in mnist.checkpoint["state_dict"].items()
        if not k.endswith("weight_normalized")}
  out = convert.convert_state_dict(sd, mnist_abstract)
  np.testing.assert_array_equal(out["params"]["stem"]["kernel"],
                                mnist.variables["params"]["stem"]["kernel"])


class NotAllowed:
  """A picklable object outside the loader's allow-list."""


def test_load_from_pt_file(mnist, tmp_path):
  path = tmp_path / "checkpoint.pt"
  torch.save(mnist.checkpoint, path)
  model, variables = convert.load_nvae(str(path))
  assert model == mnist.model
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(mnist.variables)):
    np.testing.assert_array_equal(a, b)
  # A given model returns only the variables; a bare state_dict needs the model.
  again = convert.load_nvae(str(path), model=mnist.model)
  assert set(again) == {"params", "batch_stats", "spectral"}
  with pytest.raises(ValueError, match="args"):
    convert.load_nvae(dict(mnist.checkpoint["state_dict"]))
  bad = tmp_path / "unsafe.pt"
  torch.save({**mnist.checkpoint, "extra": NotAllowed()}, bad)
  with pytest.raises(ValueError, match="allow-list"):
    convert.load_nvae(str(bad))


def test_hparams_from_args():
  hp = convert.hparams_from_args(tnvae.faithful_args("mnist"))
  assert hp["image_shape"] == (32, 32, 1) and hp["num_bins"] == 2 and hp["crop_to"] == (28, 28)
  assert (hp["channels"], hp["scales"], hp["groups_per_scale"], hp["latents_per_group"],
          hp["cells_per_group"], hp["num_flows"]) == (32, 2, 10, 20, 2, 0)
  hp = convert.hparams_from_args(tnvae.default_args(dataset="celeba_64", num_x_bits=5,
                                                    res_dist=True))
  assert hp["image_shape"] == (64, 64, 3) and hp["num_bins"] == 32
  base = vars(tnvae.tiny_args("cifar10"))
  for change, word in ((dict(num_channels_dec=16), "num_channels"),
                       (dict(num_cell_per_cond_dec=2), "num_cell_per_cond"),
                       (dict(arch_instance="res_bnswish"), "res_mbconv"),
                       (dict(res_dist=False), "res_dist"),
                       (dict(num_mixture_dec=1), "Normal decoder"),
                       (dict(dataset="svhn"), "dataset")):
    with pytest.raises(ValueError, match=word):
      convert.hparams_from_args(argparse.Namespace(**{**base, **change}))


def test_args_round_trip():
  """experiments' dgmjax-hparams -> official args is the inverse of the importer's map."""
  for args in (tnvae.tiny_args("mnist"), tnvae.faithful_args("cifar10"),
               tnvae.default_args(dataset="celeba_64", num_x_bits=5, res_dist=True)):
    hp = convert.hparams_from_args(args)
    back = tnvae.args_from_hparams(**hp)
    assert convert.hparams_from_args(back) == hp
  with pytest.raises(ValueError, match="official NVAE dataset"):
    tnvae.args_from_hparams((8, 8, 1), 17)


@pytest.mark.parametrize("name", ["mnist_faithful",
                                  pytest.param("cifar_faithful", marks=pytest.mark.slow)])
def test_faithful_layouts_import(name):
  """Every key of the official README configurations maps onto the dgmjax model built
  from their args (zeros of the reference shapes; nothing left over, nothing missing)."""
  from dgmjax import models
  model = models.create("nvae", **convert.hparams_from_args(ARGS[name]()))
  abstract = nvae_layout.abstract_variables(model)
  sd = {k: np.zeros(s, np.float32) for k, s in reference(name).items()}
  out = convert.convert_state_dict(sd, nvae_layout.per_layer_shapes(model, abstract))
  n_torch = sum(int(np.prod(s)) for k, s in reference(name).items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked",
                                   "weight_normalized")))
  assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(out["params"])) == n_torch
  assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(abstract["params"])) \
      == n_torch


@pytest.mark.slow
def test_prior_samples_match_pytorch(cifar):
  """Ancestral sampling at temperature 0.7 with shared prior noise: same decoder output."""
  tm, model = cifar.torch_model, cifar.model
  rs = np.random.default_rng(5)
  eps = [rs.standard_normal((2,) + s).astype(np.float32) for s in tm.latent_shapes()]
  with torch.no_grad():
    want = tm.sample(2, 0.7, eps=[torch.from_numpy(e) for e in eps]).numpy()
  got = model.net.apply({"params": cifar.variables["params"],
                         "batch_stats": cifar.variables["batch_stats"]}, 2, 0.7, False,
                        nhwc(eps), method=hierarchy.NVAENet.sample)
  np.testing.assert_allclose(np.asarray(got), np.transpose(want, (0, 2, 3, 1)),
                             rtol=1e-4, atol=1e-4)


def test_old_per_layer_variables_convert_once(mnist):
  """Variables in dgmjax's old per-layer layout (official module names, spectral rows in
  that layout's kernel order) are refused by the model with one line naming the converter,
  and ``stack_groups`` turns them into exactly the imported (stacked) variables."""
  model = mnist.model
  old = convert.convert_state_dict(mnist.checkpoint["state_dict"],
                                   nvae_layout.per_layer_shapes(model))
  old["spectral"] = convert.spectral_state(old["params"], 0, 10 * model.num_power_iter)
  with pytest.raises(ValueError, match=r"per-layer layout.*dgmjax\.convert\.nvae\.stack_groups"):
    model.loss(old, jnp.asarray(mnist.x), jax.random.PRNGKey(0))
  new = convert.stack_groups(model, old)
  for col in ("params", "batch_stats", "spectral"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, new[col], mnist.variables[col])
  with pytest.raises(ValueError, match="not in the per-layer"):
    convert.stack_groups(model, mnist.variables)
