"""Every repository path a config's docstring names (``tests/...py``, ``experiments/...``)
exists, so the docstrings that give a command and a measured result point somewhere."""

from __future__ import annotations

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paths_named_in_config_docstrings_exist():
  missing = []
  for path in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")):
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for ref in re.findall(r"\b((?:tests|experiments|dgmjax)/[\w/.-]+\.(?:py|json|md))", text):
      if not os.path.exists(os.path.join(ROOT, ref)):
        missing.append(f"{os.path.basename(path)}: {ref}")
  assert not missing, missing
