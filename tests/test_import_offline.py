"""``dgmjax import`` reads no data: with a ``--config`` whose dataset is not prepared
(an empty tfds data_dir), a disagreeing config is refused naming each key with both
values, before any weight is converted; the image shape and levels come from the
dataset's description (``data.image_spec``)."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from dgmjax import cli, data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_image_spec_describes_without_reading():
  assert data.image_spec("cifar10") == ((32, 32, 3), 256)
  assert data.image_spec("mnist", pad_to=32, binarize=True) == ((32, 32, 1), 2)
  assert data.image_spec("cifar10", n_bits=5) == ((32, 32, 3), 32)
  assert data.image_spec("digits") == ((8, 8, 1), 17)
  assert data.image_spec("some_tfds_name") is None
  with pytest.raises(ValueError, match="n_bits"):
    data.image_spec("digits", n_bits=5)


def test_import_with_a_disagreeing_config_names_the_keys_without_data(tmp_path, monkeypatch,
                                                                      capsys):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty_tfds"))
  args = argparse.Namespace(dataset="cifar", binarize=False, n_bits=8, nr_resnet=3,
                            nr_filters=5, nr_logistic_mix=2, kernel_size=3, max_dilation=2,
                            dropout_prob=0.0, normalization="pono", order=["s_curve"])
  path = tmp_path / "lmconv.pth"
  torch.save({"args": args, "model_state_dict": {"w": torch.zeros(1)}, "epoch": 1}, path)
  cfg = os.path.join(ROOT, "experiments", "configs", "lmconv_cifar10.py") + ":smoke"
  rc = cli.main(["import", f"--checkpoint={path}", f"--workdir={tmp_path / 'w'}",
                 f"--config={cfg}"])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1, err
  assert "disagrees with the checkpoint's hyper-parameters" in err
  assert "filters (file 5, config " in err and "resnets (file 3, config " in err
  assert "not prepared" not in err
  assert not os.path.exists(tmp_path / "w")
