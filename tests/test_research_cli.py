"""``dgmjax import|eval|sample|complete|interpolate`` in-process (``cli.main``).

Official files written by the project's PyTorch baselines (as
tests/convert/test_convert_official.py makes them) go through ``dgmjax import`` then
``dgmjax eval`` and give the baseline's log-likelihood; every command runs end to end on
``digits`` workdirs trained for two steps; --help and one-line errors. The MNIST-shaped
imports read mocked tfds data (``tfds.testing.mock_data``: 6 random images per split,
offline).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import jax
import numpy as np
import pytest
import torch

from dgmjax import cli, commands, data, images
from dgmjax.lmconv import orders as orders_lib
from dgmjax.train import config as config_lib
from dgmjax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")

# Each test trains or imports a workdir and runs commands on it: minutes in all.
pytestmark = pytest.mark.slow


def _ok(capsys, *argv) -> dict:
  rc = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  assert rc == 0, out.err[-3000:]
  return json.loads(out.out.strip().splitlines()[-1])


def _error(capsys, *argv) -> str:
  assert cli.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith("dgmjax: error: "), err
  return err


def _train(model: str, workdir, **train):
  cfg = config_lib.load_config(os.path.join(CONFIGS, f"{model}_digits.py") + ":smoke")
  cfg.train.update(dict(num_steps=2, eval_every=2, checkpoint_every=2, num_samples=0,
                        eval_batch_size=300, **train))
  loop.train(cfg, str(workdir), progress=False)
  return str(workdir)


@pytest.fixture(scope="module")
def lmconv_dir(tmp_path_factory):
  return _train("lmconv", tmp_path_factory.mktemp("lmconv"))


@pytest.fixture(scope="module")
def glow_dir(tmp_path_factory):
  return _train("glow", tmp_path_factory.mktemp("glow"))


def _initialised(model: str, workdir):
  """A workdir holding the freshly initialised state as its step-0 checkpoint and the
  config in its meta, as ``train`` writes them, without compiling a training step (the
  NVAE train step takes minutes to compile on a busy 2-core machine)."""
  from dgmjax.train import checkpoint as ckpt_lib
  from dgmjax.train import optim as optim_lib
  cfg = config_lib.load_config(os.path.join(CONFIGS, f"{model}_digits.py") + ":smoke")
  exp = loop.build(cfg)
  state = loop.init_state(exp, optim_lib.make_optimizer(cfg.optim, cfg.train.num_steps,
                                                        cfg.train.grad_accum))
  checkpointer = ckpt_lib.Checkpointer(str(workdir))
  checkpointer.save(0, state, {"data": {"epoch": 0, "index": 0}, "best_test_bpd": None,
                               "config": cfg.to_json()})
  checkpointer.wait()
  checkpointer.close()
  return str(workdir)


@pytest.fixture(scope="module")
def nvae_dir(tmp_path_factory):
  return _initialised("nvae", tmp_path_factory.mktemp("nvae"))


@pytest.fixture
def mock_mnist(monkeypatch, tmp_path):
  """tfds mnist/cifar10 mocked offline (6 images per split; preparing is a no-op)."""
  import tensorflow_datasets as tfds
  real = data.load
  monkeypatch.setattr(data, "load", lambda *a, **k: real(*a, **dict(k, download=True)))
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


def _mnist_test_images():
  return data.load("mnist", "test").get(np.arange(6))


# ------------------------------------------------------------------------------ help

@pytest.mark.parametrize("cmd,flags", [
    ("import", ["--checkpoint", "--workdir", "--config", "--weights", "--dmol_edge"]),
    ("eval", ["--workdir", "--which", "--iw_samples", "--chunk_size", "--orders"]),
    ("sample", ["--order", "--temperature", "--mixture_temperature", "--logistic_temperature",
                "--readjust_bn", "--readjust_steps", "--readjust_batch", "--num"]),
    ("complete", ["--workdir", "--observed", "--order", "--num", "--images", "--out"]),
    ("interpolate", ["--workdir", "--num", "--pairs", "--out"]),
])
def test_help_lists_the_flags(cmd, flags, capsys):
  assert cli.main([cmd, "--help"]) == 0
  out = capsys.readouterr().out
  assert f"usage: dgmjax {cmd}" in out
  for f in flags:
    assert f in out, f


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(loop, "build", lambda *a: pytest.fail("built data and model"))
  empty = tmp_path / "empty"
  assert "not found" in _error(capsys, "import", f"--checkpoint={tmp_path}/none.pt",
                               f"--workdir={empty}")
  assert "--checkpoint" in _error(capsys, "import", f"--workdir={empty}")
  assert "--observed" in _error(capsys, "complete", f"--workdir={empty}")
  assert "--iw_samples" in _error(capsys, "eval", f"--workdir={empty}", "--iw_samples=0")
  assert "--readjust_steps" in _error(capsys, "sample", f"--workdir={empty}",
                                      "--readjust_steps=0")
  assert "--mixture_temperature" in _error(capsys, "sample", f"--workdir={empty}",
                                           "--mixture_temperature=nan")
  assert "does not exist" in _error(capsys, "interpolate", f"--workdir={empty}")
  (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
  _error(capsys, "import", f"--checkpoint={tmp_path / 'junk.pt'}", f"--workdir={empty}")
  assert not empty.exists() or not os.listdir(empty)


# ----------------------------------------------------------------- digits workdirs

def test_lmconv_workdir_eval_orders_sample_complete(lmconv_dir, tmp_path, capsys):
  cfg = os.path.join(CONFIGS, "lmconv_digits.py") + ":smoke"
  plain = _ok(capsys, "eval", f"--workdir={lmconv_dir}")        # the stored config
  assert plain["step"] == 2 and plain["test_bpd"] > 0
  assert plain["test_nats"] == pytest.approx(plain["test_bpd"] * 64 * math.log(2), rel=1e-9)
  with_cfg = _ok(capsys, "eval", f"--workdir={lmconv_dir}", f"--config={cfg}")
  assert with_cfg["test_bpd"] == pytest.approx(plain["test_bpd"], rel=1e-6)
  # the configured orders (s_curve, hilbert) as an explicit ensemble: the same figure
  ens = _ok(capsys, "eval", f"--workdir={lmconv_dir}", "--orders=s_curve,hilbert")
  assert ens["test_bpd"] == pytest.approx(plain["test_bpd"], rel=1e-5)
  assert set(ens["per_order_bpd"]) == {"s_curve", "hilbert"}
  per = [ens["per_order_nats"][k] for k in ("s_curve", "hilbert")]
  assert ens["test_nats"] <= np.mean(per) + 1e-6     # log-mean-exp >= mean of the logs
  all8 = _ok(capsys, "eval", f"--workdir={lmconv_dir}", "--orders=s_curve:all")
  assert sorted(all8["per_order_bpd"]) == [f"s_curve:{i}" for i in range(8)]

  out = tmp_path / "s"
  base = _ok(capsys, "sample", f"--workdir={lmconv_dir}", "--num=3", f"--out={out}")
  x0 = np.load(base["npz"])["images"]
  hot = _ok(capsys, "sample", f"--workdir={lmconv_dir}", "--num=3", f"--out={out}",
            "--temperature=0.5", "--mixture_temperature=0.8", "--logistic_temperature=0.5",
            "--order=hilbert:3")
  x1 = np.load(hot["npz"])["images"]
  assert x1.shape == x0.shape == (3, 8, 8, 1) and not np.array_equal(x0, x1)

  done = _ok(capsys, "complete", f"--workdir={lmconv_dir}", "--observed=top", "--num=2",
             "--images=3", f"--out={tmp_path / 'c'}")
  assert os.path.isfile(done["png"]) and done["hidden_pixels"] == 32
  assert len(done["hidden_bpd_per_image"]) == 3 and 0 < done["hidden_bpd"] < 10
  from PIL import Image
  mask = np.zeros((8, 8), np.uint8)
  mask[:, :3] = 255
  Image.fromarray(mask).save(tmp_path / "m.png")
  done = _ok(capsys, "complete", f"--workdir={lmconv_dir}", f"--observed={tmp_path / 'm.png'}",
             "--order=hilbert", "--num=1", "--images=2", f"--out={tmp_path / 'c'}")
  assert done["hidden_pixels"] == 40 and os.path.isfile(done["png"])
  # wrong model or flag for this model
  assert "needs a glow or nvae" in _error(capsys, "interpolate", f"--workdir={lmconv_dir}")
  assert "needs a nvae" in _error(capsys, "sample", f"--workdir={lmconv_dir}", "--readjust_bn")
  assert "needs a nvae" in _error(capsys, "eval", f"--workdir={lmconv_dir}", "--iw_samples=2")
  assert "unknown observed" in _error(capsys, "complete", f"--workdir={lmconv_dir}",
                                      "--observed=middle")
  assert "spiral" in _error(capsys, "sample", f"--workdir={lmconv_dir}", "--order=spiral")


def test_glow_workdir_interpolate(glow_dir, tmp_path, capsys):
  got = _ok(capsys, "interpolate", f"--workdir={glow_dir}", "--num=4", "--pairs=2",
            f"--out={tmp_path}")
  from PIL import Image
  img = np.asarray(Image.open(got["png"]))
  assert got["pairs"] == 2 and img.shape[0] > img.shape[1] / 6 > 0
  assert "needs a lmconv" in _error(capsys, "complete", f"--workdir={glow_dir}",
                                    "--observed=top")
  assert "needs a lmconv" in _error(capsys, "eval", f"--workdir={glow_dir}", "--orders=s_curve")
  assert "needs a lmconv" in _error(capsys, "sample", f"--workdir={glow_dir}", "--order=raster")
  ev = _ok(capsys, "eval", f"--workdir={glow_dir}", "--which=last")
  assert ev["checkpoint"] == "last" and math.isfinite(ev["test_nats"])


def _listing(d):
  return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_nvae_workdir_iw_eval_readjusted_bn_interpolate(nvae_dir, tmp_path, capsys,
                                                        monkeypatch):
  elbo = _ok(capsys, "eval", f"--workdir={nvae_dir}")
  iw = _ok(capsys, "eval", f"--workdir={nvae_dir}", "--iw_samples=4", "--chunk_size=3")
  assert iw["iw_samples"] == 4 and math.isfinite(iw["test_bpd"])
  assert abs(iw["test_bpd"] - elbo["test_bpd"]) < 0.5
  before = {k: _listing(os.path.join(nvae_dir, k)) for k in ("best", "checkpoints")}
  args = [f"--workdir={nvae_dir}", "--num=3", "--readjust_bn", "--readjust_steps=3",
          "--readjust_batch=4", f"--out={tmp_path}", "--temperature=0.9"]
  first = _ok(capsys, "sample", *args)
  x1 = np.load(first["npz"])["images"]
  assert not first["reused"] and os.path.isdir(first["readjusted_bn"])
  second = _ok(capsys, "sample", *args)
  assert second["reused"] and second["readjusted_bn"] == first["readjusted_bn"]
  np.testing.assert_array_equal(np.load(second["npz"])["images"], x1)
  plain = _ok(capsys, "sample", f"--workdir={nvae_dir}", "--num=3", f"--out={tmp_path}",
              "--temperature=0.9")
  assert plain["num"] == 3 and "readjusted_bn" not in plain
  assert before == {k: _listing(os.path.join(nvae_dir, k)) for k in ("best", "checkpoints")}
  # a non-finite re-estimated statistic is an error, and nothing is stored
  from dgmjax.nvae import model as nvae_model
  monkeypatch.setattr(nvae_model.NVAEModel, "readjust_batch_stats",
                      lambda self, v, *a, **k: jax.tree.map(lambda s: s * np.nan,
                                                            v["batch_stats"]))
  n_stored = len(os.listdir(os.path.join(nvae_dir, commands.READJUST_DIR)))
  assert "non-finite" in _error(capsys, "sample", *args[:-1], "--temperature=0.8")
  assert len(os.listdir(os.path.join(nvae_dir, commands.READJUST_DIR))) == n_stored
  got = _ok(capsys, "interpolate", f"--workdir={nvae_dir}", "--num=3", "--pairs=1",
            f"--out={tmp_path}")
  assert got["model"] == "nvae" and os.path.isfile(got["png"])


# ---------------------------------------------------------- official files -> eval

def _lmconv_args(**kw):
  a = dict(dataset="mnist", binarize=False, n_bits=8, ours=True, nr_resnet=1, nr_filters=8,
           nr_logistic_mix=2, kernel_size=3, max_dilation=2, dropout_prob=0.0,
           normalization="pono", order=["s_curve"], randomize_order=True, ema=0.999,
           learn_weight_for_masks=False, no_bias=False)
  a.update(kw)
  return a


def test_lmconv_official_file_import_then_eval_gives_the_baseline(tmp_path, capsys,
                                                                   mock_mnist):
  from experiments.pytorch import lmconv as tl
  torch.manual_seed(0)
  tm = tl.OurPixelCNN(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, input_channels=1,
                      kernel_size=3, max_dilation=2, dropout_prob=0.0, num_bins=256,
                      binarize=False, normalization="pono").eval()
  with torch.no_grad():
    for p in tm.parameters():
      p.add_(0.1 * torch.randn_like(p))
  ema = {k: v + 0.01 for k, v in tm.state_dict().items()}
  path = tmp_path / "0_ep3.pth"
  torch.save({"epoch": 3, "args": _lmconv_args(), "model_state_dict": tm.state_dict(),
              "optimizer_state_dict": torch.optim.Adam(tm.parameters()).state_dict(),
              "ema_state_dict": ema}, path)
  wd = tmp_path / "w"
  got = _ok(capsys, "import", f"--checkpoint={path}", f"--workdir={wd}", "--weights=model")
  assert got["model"] == "lmconv" and got["data"] == "mnist"
  assert os.path.isfile(wd / "config.json")
  ev = _ok(capsys, "eval", f"--workdir={wd}", "--orders=s_curve:all")
  x = torch.from_numpy(_mnist_test_images())
  specs = orders_lib.parse("s_curve:all", 28, 28)
  with torch.no_grad():
    want_ens = tm.log_prob_ensemble(x, specs).double().numpy().mean()
    want_1 = -tm.nll(x, specs[1]).double().numpy().mean()
  assert ev["test_nats"] == pytest.approx(-want_ens, rel=1e-4)
  assert ev["per_order_nats"]["s_curve:1"] == pytest.approx(-want_1, rel=1e-4)
  plain = _ok(capsys, "eval", f"--workdir={wd}")        # the configured 8-order ensemble
  assert plain["test_nats"] == pytest.approx(-want_ens, rel=1e-4)
  # importing again into it is refused; a disagreeing config names the keys
  assert "already holds" in _error(capsys, "import", f"--checkpoint={path}", f"--workdir={wd}")
  cfg = os.path.join(CONFIGS, "lmconv_binarized_mnist.py") + ":smoke"
  err = _error(capsys, "import", f"--checkpoint={path}", f"--workdir={tmp_path / 'v'}",
               f"--config={cfg}")
  assert "num_bins (file 256, config 2)" in err and "orders" in err and "filters" not in err
  # the EMA weights by default; a compatible config is merged with the file's arguments
  wd2 = tmp_path / "w2"
  _ok(capsys, "import", f"--checkpoint={path}", f"--workdir={wd2}",
      f"--config={os.path.join(CONFIGS, 'lmconv_digits.py')}", "--config.data.name=mnist",
      "--config.model.filters=8", "--config.model.mixtures=2")
  ev2 = _ok(capsys, "eval", f"--workdir={wd2}")
  assert ev2["test_nats"] != pytest.approx(plain["test_nats"], rel=1e-6)


def test_glow_state_dict_needs_a_config_then_gives_the_baseline(tmp_path, capsys):
  from experiments.pytorch import glow as tglow
  torch.manual_seed(2)
  tm = tglow.Glow(1, n_flow=1, n_block=2, affine=True, conv_lu=True, filter_size=8)
  with torch.no_grad():
    tm(torch.rand(16, 1, 8, 8) - 0.5)
    for p in tm.parameters():
      p.add_(0.05 * torch.randn_like(p))
  tm.eval()
  path = tmp_path / "model_000100.pt"
  torch.save(tm.state_dict(), path)
  wd = tmp_path / "w"
  assert "--config" in _error(capsys, "import", f"--checkpoint={path}", f"--workdir={wd}")
  cfg = os.path.join(CONFIGS, "glow_digits.py") + ":smoke"
  _ok(capsys, "import", f"--checkpoint={path}", f"--workdir={wd}", f"--config={cfg}",
      "--config.train.eval_batch_size=300")
  ev = _ok(capsys, "eval", f"--workdir={wd}")       # no --config: the stored one
  x = data.load("digits", "test").get(np.arange(300))
  y = images.dequantize(jax.random.fold_in(jax.random.key(7919), 0), x, 17)
  with torch.no_grad():
    log_p, log_det, _ = tm(torch.from_numpy(np.array(
        np.transpose(np.asarray(y), (0, 3, 1, 2)))))
  want = (log_p + log_det).double().numpy() - 64 * math.log(17)
  assert ev["test_nats"] == pytest.approx(-want.mean(), rel=1e-4)
  got = _ok(capsys, "interpolate", f"--workdir={wd}", "--num=3", "--pairs=1")
  assert os.path.isfile(got["png"])


def test_nvae_official_file_import_then_eval(tmp_path, capsys, mock_mnist):
  from experiments.pytorch import nvae as tnvae
  torch.manual_seed(1)
  args = tnvae.tiny_args("mnist")
  tm = tnvae.AutoEncoder(args)
  opt = torch.optim.Adamax(tm.parameters(), 1e-2)
  path = tmp_path / "checkpoint.pt"
  torch.save({"epoch": 1, "state_dict": tm.state_dict(), "optimizer": opt.state_dict(),
              "global_step": 10, "args": args, "arch_instance": {"normal_enc": ["res_bnswish"]},
              "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10).state_dict(),
              "grad_scalar": {"scale": 65536.0}}, path)
  wd = tmp_path / "w"
  got = _ok(capsys, "import", f"--checkpoint={path}", f"--workdir={wd}")
  assert got["model"] == "nvae" and got["data"] == "mnist"
  cfg = commands.stored_config(str(wd))
  assert cfg.data.binarize and cfg.data.pad_to == 32 and cfg.model.crop_to == (28, 28)
  ev = _ok(capsys, "eval", f"--workdir={wd}")
  # the same figure as the library on the file's weights (tests/convert/test_convert_nvae.py
  # holds those weights' ELBO terms to the baseline's under shared noise)
  from dgmjax.convert import official
  _, _, variables = official.read_official_checkpoint(str(path))
  want = loop.evaluate(loop.build(cfg), variables)
  assert ev["test_bpd"] == pytest.approx(want, rel=1e-5)
  assert ev["test_nats"] == pytest.approx(want * 28 * 28 * math.log(2), rel=1e-5)
  iw = _ok(capsys, "eval", f"--workdir={wd}", "--iw_samples=3")
  assert math.isfinite(iw["test_nats"])
  s = _ok(capsys, "sample", f"--workdir={wd}", "--num=2", "--readjust_bn", "--readjust_steps=2",
          "--readjust_batch=2")
  assert np.load(s["npz"])["images"].shape == (2, 32, 32, 1)
  with pytest.raises(ValueError, match="no dgmjax data loader"):
    commands.data_from_args("nvae", argparse.Namespace(dataset="omniglot"))
