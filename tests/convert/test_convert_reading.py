"""Reading checkpoint files as the official training scripts save them: the ``module.``
prefix of ``DataParallel``/``DistributedDataParallel`` goes (top level and nested state
dicts, only where every key carries it); a directory is named as such."""

from __future__ import annotations

import argparse

import pytest
import torch

from dgmjax.convert.common import load_checkpoint


def test_data_parallel_prefix_is_removed_where_every_key_has_it(tmp_path):
  net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
  wrapped = torch.nn.DataParallel(net).state_dict()      # what rosinality's train.py saves
  assert all(k.startswith("module.") for k in wrapped)
  path = tmp_path / "model_000001.pt"
  torch.save(wrapped, path)
  assert set(load_checkpoint(str(path))) == set(net.state_dict())
  nested = {"model_state_dict": wrapped, "args": argparse.Namespace(a=1), "epoch": 3}
  torch.save(nested, path)
  got = load_checkpoint(str(path))
  assert set(got["model_state_dict"]) == set(net.state_dict()) and got["epoch"] == 3
  partial = {"module.0.weight": torch.zeros(1), "other": torch.zeros(1)}
  assert set(load_checkpoint(partial)) == set(partial)      # left alone: reported later


def test_a_directory_is_named_with_the_files_it_holds(tmp_path):
  torch.save({"a": torch.zeros(1)}, tmp_path / "model_000100.pt")
  with pytest.raises(ValueError, match=r"is a directory; give the checkpoint file inside it "
                                       r"\(it holds model_000100.pt\)"):
    load_checkpoint(str(tmp_path))
