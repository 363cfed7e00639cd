"""Configs built on a sibling: ``glow_imagenet64`` is ``glow_imagenet32`` at 64x64 with one
more level, and every NVAE config trains with the one official recipe of
``nvae_cifar10.official_recipe``. Siblings load by path, whatever the working directory."""

from __future__ import annotations

import glob
import math
import os

import pytest

from dgmjax.train import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "experiments", "configs")


def _flat(c, prefix=""):
  out = {}
  for k, v in c.items():
    if hasattr(v, "items"):
      out.update(_flat(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("variant", ["", ":smoke", ":smoke+bf16"])
def test_glow_imagenet64_is_imagenet32_with_its_data_and_levels(variant):
  a = _flat(config_lib.load_config(os.path.join(CONFIGS, "glow_imagenet32.py") + variant))
  b = _flat(config_lib.load_config(os.path.join(CONFIGS, "glow_imagenet64.py") + variant))
  assert {k for k in a if a[k] != b[k]} == {"data.name", "model.levels"}
  assert (b["data.name"], b["model.levels"]) == ("downsampled_imagenet/64x64", 4)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "nvae_*.py"))),
                         ids=os.path.basename)
def test_every_nvae_config_uses_the_official_recipe(path):
  c = config_lib.load_config(path)
  dims = {"digits": 64, "cifar10": 3072, "downsampled_imagenet/32x32": 3072,
          "celeb_a": 12288, "mnist": 784}[c.data.name]
  o, m, n = c.optim, c.model, c.train.num_steps
  assert (o.name, o.lr, o.schedule, o.end_lr_factor) == ("adamax", 1e-2, "cosine", 1e-2)
  assert math.isclose(o.eps * dims * math.log(2), 1e-3)
  assert math.isclose(o.weight_decay * dims * math.log(2), 3e-4)
  assert (m.kl_warmup_steps, m.kl_const_steps, m.kl_const_coeff, m.dmol_edge) == \
      (int(0.3 * n), max(1, int(1e-4 * n)), 1e-4, "exact")
  smoke = config_lib.load_config(path + ":smoke")
  assert (smoke.model.channels, smoke.train.num_steps, smoke.optim.warmup_steps) == (4, 20, 2)


def test_a_config_loads_its_sibling_from_any_working_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(CONFIGS)
  here = config_lib.load_config("glow_imagenet64.py:smoke")
  monkeypatch.chdir(tmp_path)
  assert config_lib.load_config(os.path.join(CONFIGS, "glow_imagenet64.py:smoke")) == here
