"""``dgmjax manipulate`` in-process (``cli.main``) on a ``digits`` Glow workdir holding its
initialised state (``test_research_cli._initialised``: no training step is compiled):
the class direction end to end (the PNG has one row per test image and one column per
strength, the JSON line counts the images with and without the class), its --help, and
the one-line errors (an attribute digits does not have, a class no image has, bad
strengths, a missing --attribute)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dgmjax import cli
from tests.test_research_cli import _error, _initialised, _ok


@pytest.fixture(scope="module")
def glow_dir(tmp_path_factory):
  return _initialised("glow", tmp_path_factory.mktemp("glow"))


def test_help_lists_the_flags(capsys):
  assert cli.main(["manipulate", "--help"]) == 0
  out = capsys.readouterr().out
  for f in ("--workdir", "--attribute", "--strengths", "--num", "--which", "--out",
            "--direction_images"):
    assert f in out, f


@pytest.mark.slow
def test_glow_class_direction_end_to_end(glow_dir, tmp_path, capsys):
  got = _ok(capsys, "manipulate", f"--workdir={glow_dir}", "--attribute=class:3",
            "--strengths=-1,0,1", "--num=4", "--direction_images=200", "--batch=64",
            f"--out={tmp_path}")
  from PIL import Image
  assert got["png"] == os.path.join(str(tmp_path), "manipulate_class3.png")
  img = np.asarray(Image.open(got["png"]))
  # 4 rows x 3 columns of 8x8 images upscaled 4x, with the grid's padding
  assert img.shape[0] > img.shape[1] > 0 and abs(img.shape[0] / img.shape[1] - 4 / 3) < 0.1
  assert got["model"] == "glow" and got["strengths"] == [-1.0, 0.0, 1.0]
  assert got["images"] == 4 and got["direction_images"] == 200
  assert got["with"] + got["without"] == 200 and 0 < got["with"] < 200
  assert len(got["direction_norms"]) == 2 and got["direction_norm"] > 0
  assert "'digits' has no attribute 'Smiling'" in _error(
      capsys, "manipulate", f"--workdir={glow_dir}", "--attribute=Smiling")
  assert "0 of the first 200" in _error(capsys, "manipulate", f"--workdir={glow_dir}",
                                        "--attribute=class:12", "--direction_images=200")
  assert "--strengths" in _error(capsys, "manipulate", f"--workdir={glow_dir}",
                                 "--attribute=class:3", "--strengths=a,b")
  assert "--attribute" in _error(capsys, "manipulate", f"--workdir={glow_dir}")
