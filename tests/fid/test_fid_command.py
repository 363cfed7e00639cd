"""``dgmjax fid`` end to end on a digits workdir with a weights file of random values
(the network's input side set to 75 instead of 299 to keep the test short; the resize
itself is checked against pytorch-fid in test_fid.py):
the reference statistics of a split are computed once and cached in pytorch-fid's
format, a ``.npz`` reference is used as it is, the FID of the model's samples to it is a
finite number >= 0, and the FID of the reference to itself is 0; bad flags are one-line
errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dgmjax import cli
from dgmjax.fid import frechet, inception
from tests.fid.test_fid import _random_fid_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(capsys, *argv):
  rc = cli.main([str(a) for a in argv])
  out = capsys.readouterr()
  assert rc == 0, out.err[-2000:]
  return json.loads(out.out.strip().splitlines()[-1])


@pytest.mark.slow
def test_fid_on_a_digits_workdir(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(inception, "SIZE", 75)
  weights = tmp_path / "pt_inception-random.pth"
  torch.save(_random_fid_state_dict(1), weights)
  wd = tmp_path / "w"
  cfg = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")
  assert cli.main(["train", f"--config={cfg}", f"--workdir={wd}", "--config.train.num_steps=2",
                   "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
                   "--config.train.num_samples=0"]) == 0
  capsys.readouterr()
  first = _run(capsys, "fid", f"--workdir={wd}", f"--inception={weights}", "--num=6",
               "--batch=4", "--reference=digits:test")
  assert np.isfinite(first["fid"]) and first["fid"] >= 0 and first["num"] == 6
  ref = first["reference_stats"]
  mu, sigma = frechet.load_stats(ref)
  assert os.path.dirname(ref) == str(wd / "fid") and sigma.shape == (2048, 2048)
  again = _run(capsys, "fid", f"--workdir={wd}", f"--inception={weights}", "--num=6",
               "--batch=4", f"--reference={ref}")
  assert again["fid"] == pytest.approx(first["fid"], rel=1e-9)   # same samples, same stats
  assert abs(frechet.frechet_distance(mu, sigma, mu, sigma)) <= 1e-6 * np.trace(sigma)
  assert cli.main(["fid", f"--workdir={wd}", f"--inception={tmp_path / 'none.pth'}"]) == 2
  assert "--inception file not found" in capsys.readouterr().err
