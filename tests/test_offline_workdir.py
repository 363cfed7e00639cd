"""A workdir samples without its dataset (issue 22).

Official files of an MNIST model (a rosinality Glow state_dict, an ajayjain/lmconv file)
are imported with the tfds data_dir an empty folder, where 'mnist' is not prepared:
``sample`` and ``interpolate`` then run (the image shape and levels come from the
dataset's description and the checkpoint's meta, no file is opened; interpolate's
endpoints are model samples and its output says so), ``eval``, ``complete`` and
``interpolate --endpoints=test``, which need test images, stop with one line naming the
dataset and how to prepare it, and no command logs a warning on the way (orbax's
missing ``_CHECKPOINT_METADATA`` note among them).
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from dgmjax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")


@pytest.fixture
def no_tfds(monkeypatch, tmp_path):
  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
  return empty


def _run(capsys, caplog, *argv) -> tuple[int, str, str]:
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    rc = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  warnings = [f"{r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.WARNING]
  assert not warnings, warnings
  assert "WARNING" not in out.err, out.err
  return rc, out.out, out.err


def _ok(capsys, caplog, *argv) -> dict:
  rc, out, err = _run(capsys, caplog, *argv)
  assert rc == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _one_line_error(capsys, caplog, *argv) -> str:
  rc, _, err = _run(capsys, caplog, *argv)
  err = err.strip()
  assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("dgmjax: error: "), err
  return err


def _not_prepared(err: str) -> None:
  assert "dataset 'mnist' (config data.name)" in err, err
  assert "not prepared" in err and "download_and_prepare" in err, err


@pytest.fixture
def glow_mnist(tmp_path, capsys, caplog, no_tfds):
  """A rosinality Glow state_dict of an MNIST model, saved as its train.py saves it (the
  model wrapped in nn.DataParallel: every key 'module.'-prefixed), imported with no MNIST
  at hand."""
  from experiments.pytorch import glow as tglow
  torch.manual_seed(0)
  tm = tglow.Glow(1, n_flow=1, n_block=2, affine=True, conv_lu=True, filter_size=8)
  with torch.no_grad():
    tm(torch.rand(8, 1, 28, 28) - 0.5)          # the data-dependent ActNorm init
  path = tmp_path / "model_000001.pt"
  torch.save({f"module.{k}": v for k, v in tm.state_dict().items()}, path)
  wd = tmp_path / "glow"
  got = _ok(capsys, caplog, "import", f"--checkpoint={path}", f"--workdir={wd}",
            f"--config={os.path.join(CONFIGS, 'glow_digits.py')}:smoke",
            "--config.data.name=mnist")
  assert got["data"] == "mnist"
  return wd


def test_sample_and_interpolate_without_the_dataset(glow_mnist, tmp_path, capsys, caplog):
  wd = glow_mnist
  got = _ok(capsys, caplog, "sample", f"--workdir={wd}", "--num=3", f"--out={tmp_path / 's'}")
  assert got["num"] == 3 and os.path.isfile(got["png"])
  got = _ok(capsys, caplog, "interpolate", f"--workdir={wd}", "--num=3", "--pairs=1",
            "--temperature=0.7", f"--out={tmp_path / 'i'}")
  assert os.path.isfile(got["png"])
  assert got["endpoints"] == "samples" and got["temperature"] == 0.7
  assert "'mnist'" in got["note"] and "samples of the model" in got["note"]
  # what needs test images says which dataset and how to prepare it, in one line
  _not_prepared(_one_line_error(capsys, caplog, "eval", f"--workdir={wd}"))
  _not_prepared(_one_line_error(capsys, caplog, "interpolate", f"--workdir={wd}",
                                "--endpoints=test"))
  # a config whose data disagree with the checkpoint's images is refused, naming both
  err = _one_line_error(capsys, caplog, "sample", f"--workdir={wd}", "--num=2",
                        f"--config={os.path.join(CONFIGS, 'glow_digits.py')}:smoke")
  assert "[28, 28, 1] with 256 levels" in err and "[8, 8, 1] with 17" in err, err


def _lmconv_file(tmp_path, filters: int):
  """An ajayjain/lmconv ``.pth`` of an MNIST model (its ``args`` as ``main.py`` stores them)."""
  from experiments.pytorch import lmconv as tl
  from tests.test_research_cli import _lmconv_args
  torch.manual_seed(0)
  tm = tl.OurPixelCNN(nr_resnet=1, nr_filters=filters, nr_logistic_mix=2, input_channels=1,
                      kernel_size=3, max_dilation=2, dropout_prob=0.0, num_bins=256,
                      binarize=False, normalization="pono").eval()
  path = tmp_path / "0_ep1.pth"
  torch.save({"epoch": 1, "args": _lmconv_args(nr_filters=filters),
              "model_state_dict": tm.state_dict()}, path)
  return path


def test_complete_without_the_dataset_is_one_line(tmp_path, capsys, caplog, no_tfds):
  path = _lmconv_file(tmp_path, filters=4)
  wd = tmp_path / "lmconv"
  assert _ok(capsys, caplog, "import", f"--checkpoint={path}", f"--workdir={wd}")["data"] \
      == "mnist"
  _not_prepared(_one_line_error(capsys, caplog, "complete", f"--workdir={wd}",
                                "--observed=top"))


@pytest.mark.slow
def test_official_lmconv_and_nvae_files_sample_without_the_dataset(tmp_path, capsys, caplog,
                                                                  no_tfds):
  """The two other official formats: an ajayjain/lmconv file and an NVlabs/NVAE
  checkpoint.pt of MNIST models import and sample with MNIST absent."""
  from experiments.pytorch import nvae as tnvae
  path = _lmconv_file(tmp_path, filters=8)
  args = tnvae.tiny_args("mnist")
  nv = tnvae.AutoEncoder(args)
  nvae_path = tmp_path / "checkpoint.pt"
  torch.save({"epoch": 1, "state_dict": nv.state_dict(), "args": args,
              "arch_instance": {"normal_enc": ["res_bnswish"]}}, nvae_path)
  for name, file in (("lmconv", path), ("nvae", nvae_path)):
    wd = tmp_path / name
    got = _ok(capsys, caplog, "import", f"--checkpoint={file}", f"--workdir={wd}")
    assert got["model"] == name and got["data"] == "mnist"
    got = _ok(capsys, caplog, "sample", f"--workdir={wd}", "--num=2",
              f"--out={tmp_path / (name + '_s')}")
    assert got["num"] == 2 and os.path.isfile(got["png"])
    _not_prepared(_one_line_error(capsys, caplog, "eval", f"--workdir={wd}"))
