"""dgmjax.convert.official: official checkpoint files written by the project's PyTorch
baselines in each official format read back with the baseline's log-likelihood (the
LMConv one also through the order ensemble, ``dgmjax.lmconv.ensemble``); the argument
mapping and hyper-parameter conflicts; unrecognised files."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import dgmjax
from dgmjax import images
from dgmjax.convert import official
from dgmjax.lmconv import ensemble
from dgmjax.lmconv import orders as orders_lib
from experiments.pytorch import glow as tglow
from experiments.pytorch import lmconv as tl
from experiments.pytorch import nvae as tnvae


def _lmconv_args(**kw):
  """The argument dict ajayjain/lmconv main.py stores as ``args`` (a subset)."""
  a = dict(dataset="mnist", binarize=True, n_bits=8, ours=True, nr_resnet=1, nr_filters=8,
           nr_logistic_mix=10, kernel_size=3, max_dilation=2, dropout_prob=0.0,
           normalization="pono", order=["s_curve"], randomize_order=True, ema=0.999,
           learn_weight_for_masks=False, no_bias=False, base_order_reflect_rows=False,
           base_order_reflect_cols=False, base_order_transpose=False)
  a.update(kw)
  return a


@pytest.fixture(scope="module")
def lmconv_file(tmp_path_factory):
  torch.manual_seed(0)
  tm = tl.OurPixelCNN(nr_resnet=1, nr_filters=8, nr_logistic_mix=10, input_channels=1,
                      kernel_size=3, max_dilation=2, dropout_prob=0.0, num_bins=2,
                      binarize=True, normalization="pono").eval()
  with torch.no_grad():
    for p in tm.parameters():
      p.add_(0.1 * torch.randn_like(p))
  ema = {k: v + 0.01 for k, v in tm.state_dict().items()}
  opt = torch.optim.Adam(tm.parameters(), lr=2e-4)
  path = tmp_path_factory.mktemp("lmconv") / "0_ep3.pth"
  torch.save({"epoch": 3, "global_step": 30, "args": _lmconv_args(),
              "model_state_dict": tm.state_dict(), "optimizer_state_dict": opt.state_dict(),
              "ema_state_dict": ema}, path)
  return tm, str(path)


@pytest.mark.slow
def test_lmconv_official_file_gives_the_baseline_likelihood(lmconv_file):
  tm, path = lmconv_file
  name, hp, variables = official.read_official_checkpoint(path, weights="model")
  assert name == "lmconv" and hp["image_shape"] == (28, 28, 1) and hp["num_bins"] == 2
  assert hp["orders"] == ("s_curve:all",) and hp["filters"] == 8
  model = dgmjax.models.create(name, **hp)
  x = np.random.default_rng(0).integers(0, 2, (2, 28, 28, 1)).astype(np.uint8)
  order = orders_lib.named("s_curve", 28, 28, 3)
  got = np.asarray(model.log_prob(variables, jnp.asarray(x), order=order), np.float64)
  with torch.no_grad():
    want = -tm.nll(torch.from_numpy(x), order).double().numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # the EMA weights are taken by default when the file has them
  _, _, ema = official.read_official_checkpoint(path)
  np.testing.assert_allclose(ema["params"]["u_init"]["bias"],
                             variables["params"]["u_init"]["bias"] + 0.01, rtol=1e-6)
  # the paper's ensemble over the 8 s-curves, beside the single orders
  ens, per = ensemble.ensemble_log_prob(model, variables, x, "s_curve:all")
  assert per.shape == (8, 2)
  np.testing.assert_allclose(per[3], got, rtol=1e-4)
  with torch.no_grad():
    want_ens = tm.log_prob_ensemble(torch.from_numpy(x),
                                    orders_lib.parse("s_curve:all", 28, 28)).double().numpy()
  np.testing.assert_allclose(ens, want_ens, rtol=1e-4)
  assert np.all(np.asarray(ens) >= np.asarray(per).min(0))
  # the per-resnet official arrays arrive stacked (dgmjax's one layout)
  assert set(variables["params"]["up_layers_0"]) == {"u_stream"}


@pytest.mark.slow
def test_nvae_official_file_reads_with_optimiser_states(tmp_path):
  torch.manual_seed(1)
  args = tnvae.tiny_args("mnist")
  tm = tnvae.AutoEncoder(args)
  opt = torch.optim.Adamax(tm.parameters(), 1e-2, weight_decay=3e-4, eps=1e-3)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10, eta_min=1e-4)
  ckpt = {"epoch": 1, "state_dict": tm.state_dict(), "optimizer": opt.state_dict(),
          "global_step": 10, "args": args, "arch_instance": {"normal_enc": ["res_bnswish"]},
          "scheduler": sched.state_dict(), "grad_scalar": {"scale": 65536.0, "_growth_tracker": 0}}
  path = tmp_path / "checkpoint.pt"
  torch.save(ckpt, path)
  name, hp, variables = official.read_official_checkpoint(str(path))
  assert name == "nvae"
  from dgmjax.convert import nvae as cn
  assert hp == cn.hparams_from_args(args)
  model, want = cn.load_nvae({"state_dict": tm.state_dict(), "args": args})
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(want)):
    np.testing.assert_array_equal(a, b)
  # (tests/convert/test_convert_nvae.py holds these converted weights to the baseline's
  # ELBO terms with shared noise); here the bound is finite on binary digits
  x = np.zeros((2,) + model.image_shape, np.uint8)
  x[:, 8:24, 12:20] = 1
  lp = model.log_prob(variables, jnp.asarray(x), jax.random.PRNGKey(0), iw_samples=2)
  assert lp.shape == (2,) and bool(jnp.all(jnp.isfinite(lp)))
  with pytest.raises(ValueError, match="expected 'lmconv'"):
    official.read_official_checkpoint(str(path), model_name="lmconv")
  # the one (stacked) layout: each scale's groups on a leading axis
  assert "dec_groups_1" in variables["params"] and "dec_tower_0" not in variables["params"]


@pytest.mark.slow
def test_glow_bare_state_dict_needs_a_config_and_gives_the_baseline_likelihood(tmp_path):
  image, num_bins = (8, 8, 2), 32
  torch.manual_seed(2)
  tm = tglow.Glow(image[2], n_flow=2, n_block=2, affine=True, conv_lu=True, filter_size=16)
  with torch.no_grad():
    tm(torch.rand(16, image[2], image[0], image[1]) - 0.5)
    for p in tm.parameters():
      p.add_(0.05 * torch.randn_like(p))
  tm.eval()
  path = tmp_path / "model_000100.pt"
  torch.save(tm.state_dict(), path)
  with pytest.raises(ValueError, match="config"):
    official.read_official_checkpoint(str(path))
  hp = dict(image_shape=image, num_bins=num_bins, levels=2, steps=2, width=16,
            coupling="affine", permutation="lu")
  name, hp2, variables = official.read_official_checkpoint(str(path), hparams=hp)
  assert name == "glow" and hp2 == hp
  model = dgmjax.models.create(name, **hp)
  x = jnp.asarray(np.random.RandomState(0).randint(0, num_bins, (3,) + image), jnp.uint8)
  rng = jax.random.PRNGKey(7)
  got = np.asarray(model.log_prob(variables, x, rng))
  y = images.dequantize(rng, x, num_bins)
  with torch.no_grad():
    log_p, log_det, _ = tm(torch.from_numpy(np.ascontiguousarray(
        np.transpose(np.asarray(y), (0, 3, 1, 2)))))
  want = (log_p + log_det).numpy() - math.prod(image) * math.log(num_bins)
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_lmconv_args_mapping_and_conflicts():
  from dgmjax.convert.lmconv import hparams_from_args
  hp = hparams_from_args(_lmconv_args(dataset="cifar", binarize=False, order="hilbert",
                                      randomize_order=False, normalization="weight_norm"))
  assert hp["image_shape"] == (32, 32, 3) and hp["num_bins"] == 256
  assert hp["orders"] == ("hilbert",) and hp["normalization"] == "weight_norm"
  for change, word in ((dict(ours=False), "PixelCNN"), (dict(normalization="order_rescale"),
                                                        "normalization"),
                       (dict(order=["s_curve_center_quarter_last"]), "order"),
                       (dict(base_order_transpose=True), "base_order_transpose"),
                       (dict(dataset="svhn"), "dataset")):
    with pytest.raises(ValueError, match=word):
      hparams_from_args(_lmconv_args(**change))
  file_hp = hparams_from_args(_lmconv_args())
  cfg = dict(file_hp, filters=160, orders=["s_curve:all"], dropout=0.0, remat=True)
  assert official.hparams_conflicts(file_hp, cfg) == ["filters"]
  assert official.hparams_conflicts(file_hp, dict(file_hp)) == []


def test_unrecognised_or_bad_arguments():
  with pytest.raises(ValueError, match="unrecognised checkpoint"):
    official.read_official_checkpoint({"foo.weight": np.zeros(3)})
  with pytest.raises(ValueError, match="weights"):
    official.read_official_checkpoint({"u_init.weight": np.zeros(3)}, weights="best")
