"""The command line as a user meets it: help, one-line errors, nothing built or created
on a doomed command, and drivers imported only from the checkout that holds dgmjax."""

import json
import os
import subprocess
import sys

import pytest

from dgmjax import cli
from dgmjax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")


def _env():
  return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.parametrize("cmd", ["train", "eval", "sample"])
def test_command_help_lists_its_flags_and_exits_0(cmd, capsys):
  assert cli.main([cmd, "--help"]) == 0
  out = capsys.readouterr().out
  assert f"usage: dgmjax {cmd}" in out
  for flag in ("--config", "--workdir", "--distributed", "--coordinator_address",
               "--num_processes", "--process_id"):
    assert flag in out
  if cmd == "sample":
    assert "--num" in out and "--temperature" in out


@pytest.mark.parametrize("argv,usage", [
    (["bench", "--help"], "usage: dgmjax bench {glow,"),
    (["bench", "compile_depth", "--help"], "usage: dgmjax bench compile_depth"),
    (["compare", "--help"], "usage: dgmjax compare")])
def test_delegated_help_exits_0_and_names_the_full_command(argv, usage, capsys):
  try:
    rc = cli.main(argv)
  except SystemExit as e:   # argparse's --help in a delegated driver
    rc = e.code
  assert rc == 0
  assert capsys.readouterr().out.startswith(usage)


def _one_line_error(capsys, *needles):
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert err.startswith("dgmjax: error: "), err
  for n in needles:
    assert n in err, err
  return err


@pytest.mark.parametrize("argv,needles", [
    (["train", "--config=/no/such/config.py", "--workdir=W"], ["/no/such/config.py"]),
    (["train", f"--config={CONFIG}:smok", "--workdir=W"], ["unknown variant 'smok'"]),
    (["train", f"--config={CONFIG}", "--workdir=W", "--config.train.num_stesp=3"],
     ["num_stesp"]),
    (["train", f"--config={CONFIG}", "--workdir=W", "--config.optim.lr=nan"], ["optim.lr"]),
    (["train", f"--config={CONFIG}", "--workdir=W", "--config.train.checkpoint_every=0"],
     ["checkpoint_every"]),
    (["train", f"--config={CONFIG}"], ["--workdir"]),
    (["train", "--workdir=W"], ["stores no config", "--config"]),
    (["train", f"--config={CONFIG}", "--workdir=W", "--process_id=1"], ["--distributed"]),
    (["eval", f"--config={CONFIG}", "--workdir=W"], ["does not exist"]),
    (["sample", f"--config={CONFIG}", "--workdir=W", "--num=0"], ["--num"]),
    (["sample", f"--config={CONFIG}", "--workdir=W", "--temperature=-1"], ["--temperature"]),
    (["bench"], ["name a benchmark"]),
    (["frobnicate"], ["unknown command"]),
])
def test_user_errors_are_one_line_exit_2_and_create_nothing(argv, needles, tmp_path, capsys,
                                                           monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(loop, "build", lambda *a: pytest.fail("built data and model"))
  assert cli.main(argv) == 2
  _one_line_error(capsys, *needles)
  assert os.listdir(tmp_path) == []


def test_eval_and_sample_on_an_empty_workdir_fail_fast_and_create_nothing(tmp_path, capsys,
                                                                         monkeypatch):
  monkeypatch.setattr(loop, "build", lambda *a: pytest.fail("built data and model"))
  for cmd in ("eval", "sample"):
    assert cli.main([cmd, f"--config={CONFIG}:smoke", f"--workdir={tmp_path}"]) == 2
    _one_line_error(capsys, "no checkpoint in", str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    cli.main(["eval", f"--config={CONFIG}", f"--workdir={tmp_path / 'W'}", "--debug"])


def test_drivers_come_from_the_checkout_never_the_working_directory(tmp_path):
  """A planted ./experiments in the working directory must not run."""
  marker = tmp_path / "PWNED"
  planted = tmp_path / "experiments"
  (planted / "bench").mkdir(parents=True)
  payload = f"open({str(marker)!r}, 'w').write('x')\ndef main(argv): return 0\n"
  for rel in ("__init__.py", "demo.py", "compare.py", "bench/__init__.py", "bench/evil.py"):
    (planted / rel).write_text(payload)
  r = subprocess.run([sys.executable, "-m", "dgmjax", "bench", "evil"], cwd=tmp_path,
                     env=_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "experiments.bench.evil is not available" in r.stderr
  r = subprocess.run([sys.executable, "-m", "dgmjax", "demo", "--help"], cwd=tmp_path,
                     env=_env(), capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "usage: dgmjax demo" in r.stdout
  assert not marker.exists()


def test_train_without_config_resumes_with_the_stored_one(tmp_path, capsys):
  wd = str(tmp_path / "w")
  cfg = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")
  assert cli.main(["train", f"--config={cfg}", f"--workdir={wd}", "--config.train.num_steps=2",
                   "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
                   "--config.train.num_samples=0"]) == 0
  first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert cli.main(["train", f"--workdir={wd}"]) == 0
  again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert first["step"] == again["step"] == 2


def test_a_start_that_fails_in_a_new_workdir_leaves_nothing_behind(tmp_path, monkeypatch,
                                                                    capsys):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty_tfds"))     # cifar10 absent
  wd = tmp_path / "new" / "w"
  cfg = os.path.join(ROOT, "experiments", "configs", "glow_cifar10.py") + ":smoke"
  assert cli.main(["train", f"--config={cfg}", f"--workdir={wd}"]) == 2
  assert "is not prepared" in capsys.readouterr().err
  assert not os.path.exists(wd)                            # no train.lock left behind
