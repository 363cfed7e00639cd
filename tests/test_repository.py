"""The repository stands alone: a user who clones it gets every file the tests read.

``.ci/run`` runs the suite in a fresh clone with nothing beside it; this test catches
the usual ways a test or a module reaches outside the repository before CI does.
"""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# An absolute path of some machine, or the reading material kept beside the checkout.
OUTSIDE = re.compile(r"(?<![\w.])/(work|root|home|Users)/|\.\./shared|[\"']shared[\"']")


def _tracked_text_files():
  out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
  if out.returncode != 0:  # an exported tree without git: walk it instead
    for d, dirs, files in os.walk(ROOT):
      dirs[:] = [x for x in dirs if not x.startswith(".")]
      for f in files:
        yield os.path.relpath(os.path.join(d, f), ROOT)
    return
  yield from out.stdout.splitlines()


def test_no_file_points_outside_the_repository():
  offenders = []
  for rel in _tracked_text_files():
    if rel.startswith("tests/testdata/") or not rel.endswith(
        (".py", ".cfg", ".toml", ".txt", "Makefile", "run", ".md")):
      continue
    with open(os.path.join(ROOT, rel), errors="replace") as f:
      for i, line in enumerate(f, 1):
        if OUTSIDE.search(line):
          offenders.append(f"{rel}:{i}: {line.strip()}")
  assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_what_it_should():
  sh, wk = "sha" + "red", "/wo" + "rk/"  # in pieces, so that this file does not match itself
  for bad in [f'REF = "{wk}{sh}/reference/state_dicts"', f'os.path.join(R, "..", "{sh}")',
              f"see ../{sh}/reference", "open('/" + "home/me/data.npz')"]:
    assert OUTSIDE.search(bad), bad
  for fine in ["shared by every model", "tests/testdata/state_dicts", "/tmp/x", "a/work/b"]:
    assert not OUTSIDE.search(fine), fine


def test_the_suite_imports_this_checkouts_dgmjax():
  """In .ci/run's clone the venv was installed from elsewhere: the code under test must
  still be the clone's own."""
  import dgmjax
  assert os.path.dirname(os.path.abspath(dgmjax.__file__)) == os.path.join(ROOT, "dgmjax")
