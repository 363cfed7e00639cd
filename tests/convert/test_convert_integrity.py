"""Importers refuse what they cannot load faithfully: a model of the wrong kind, NaN/inf
weights (the key is named) and a zip-based ``.pt`` whose member fails its CRC-32 check
(``torch.load`` would read it silently)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

import dgmjax
from dgmjax.convert.common import check_zip_integrity
from dgmjax.convert.glow import load_glow
from dgmjax.convert.lmconv import load_lmconv
from dgmjax.convert.nvae import load_nvae
from experiments.pytorch import lmconv as tl


@pytest.fixture(scope="module")
def pair():
  torch.manual_seed(0)
  tm = tl.OurPixelCNN(nr_resnet=1, nr_filters=8, nr_logistic_mix=10, input_channels=1,
                      kernel_size=3, max_dilation=2, dropout_prob=0.0, num_bins=2,
                      binarize=True, normalization="pono").eval()
  jm = dgmjax.models.create("lmconv", image_shape=(4, 4, 1), num_bins=2, filters=8, resnets=1,
                            kernel_size=3, max_dilation=2, normalization="pono")
  return tm, jm


def test_wrong_model_type_is_a_value_error(pair):
  tm, jm = pair
  sd = tm.state_dict()
  glow = dgmjax.models.create("glow", image_shape=(4, 4, 1), num_bins=2, levels=1, steps=1,
                              width=4)
  with pytest.raises(ValueError, match="load_glow needs a dgmjax 'glow' model.*lmconv"):
    load_glow(sd, jm)
  with pytest.raises(ValueError, match="load_lmconv needs a dgmjax 'lmconv' model.*glow"):
    load_lmconv(sd, glow)
  with pytest.raises(ValueError, match="load_nvae needs a dgmjax 'nvae' model"):
    load_nvae(sd, jm)
  with pytest.raises(ValueError, match="load_lmconv needs"):
    load_lmconv(sd, object())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weight_names_the_key(pair, bad):
  tm, jm = pair
  sd = {k: v.clone() for k, v in tm.state_dict().items()}
  sd["up_layers.1.u_stream.0.conv_input.bias"][2] = bad
  with pytest.raises(ValueError, match=r"up_layers\.1\.u_stream\.0\.conv_input\.bias.*non-finite"):
    load_lmconv(sd, jm)


def _flip_byte_in_member(path, member_suffix):
  with zipfile.ZipFile(path) as zf:
    info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
  with open(path, "r+b") as f:
    f.seek(info.header_offset + 26)
    n_name, n_extra = np.frombuffer(f.read(4), "<u2")
    pos = info.header_offset + 30 + int(n_name) + int(n_extra) + info.compress_size // 2
    f.seek(pos)
    byte = f.read(1)
    f.seek(pos)
    f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_zip_checkpoint_is_refused(pair, tmp_path):
  tm, jm = pair
  path = tmp_path / "model.pt"
  torch.save(tm.state_dict(), path)
  check_zip_integrity(path)                         # intact: passes
  load_lmconv(str(path), jm)
  _flip_byte_in_member(path, "data/0")
  with pytest.raises(ValueError, match="CRC-32"):
    load_lmconv(str(path), jm)
  # a legacy (non-zip) file is not a zip archive: nothing to check
  legacy = tmp_path / "legacy.pt"
  torch.save(tm.state_dict(), legacy, _use_new_zipfile_serialization=False)
  check_zip_integrity(legacy)
