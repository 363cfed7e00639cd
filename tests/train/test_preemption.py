"""SIGTERM (a cluster or TPU VM about to reclaim the machine) and SIGINT (Ctrl-C) at the
worst moments: the trainer finishes the step it is in, saves it, releases the lock and
stops with one line; resuming gives the uninterrupted run bit for bit, each metric row
once.

The in-process tests send the signal to the test process itself from inside the loop
(when a batch is drawn, while a save is in flight, during an evaluation, while the
experiment is built), so each moment is hit exactly; the CLI test sends a real SIGTERM
from outside at whatever moment the trainer is in.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dgmjax import data
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import lock as lock_lib
from dgmjax.train import loop, metrics, optim as optim_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")
STEPS = 16
TRAIN = dict(num_steps=STEPS, checkpoint_every=5, eval_every=4, log_every=1, num_samples=0)


def smoke_config(**train):
  c = config_lib.load_config(CONFIG + ":smoke")
  c.train.update(dict(TRAIN, **train))
  return c


def _rows(workdir):
  """(step, key, value) of every metric row but timings, in file order."""
  out = []
  for r in metrics.read_metrics(workdir):
    for k, v in sorted(r.items()):
      if k not in ("step", "time", "steps_per_s"):
        out.append((r["step"], k, v))
  return out


def _final_params(workdir):
  cfg = smoke_config()
  exp = loop.build(cfg)
  ck = ckpt_lib.Checkpointer(workdir, create=False)
  try:
    state, _ = ck.restore(loop.abstract_state(exp, optim_lib.make_optimizer(cfg.optim,
                                                                            STEPS)), STEPS)
  finally:
    ck.close()
  return [np.asarray(x) for x in jax.tree.leaves((state.params, state.ema_params,
                                                  state.opt_state))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uninterrupted"))
  loop.train(smoke_config(), wd, progress=False)
  return wd


def _signal_at(monkeypatch, owner, name, count, sig, after=False):
  """Wraps ``owner.name`` so that its ``count``-th call sends ``sig`` to this process
  (before the call, or right after it returns with ``after``)."""
  original = getattr(owner, name)
  calls = [0]

  def wrapped(*a, **k):
    calls[0] += 1
    if calls[0] == count and not after:
      os.kill(os.getpid(), sig)
    out = original(*a, **k)
    if calls[0] == count and after:
      os.kill(os.getpid(), sig)
    return out

  monkeypatch.setattr(owner, name, wrapped)


MOMENTS = {
    # (what is wrapped, which call, after it returns?) -> the step the run stops after
    "before the first step compiles": ((data.Batches, "__next__"), 1, False, 1),
    "mid-training": ((data.Batches, "__next__"), 7, False, 7),
    "while a save is in flight": ((ckpt_lib.Checkpointer, "save"), 1, True, 4),
    "during an evaluation": ((loop, "evaluate"), 2, False, 8),
    "while the experiment is built": ((loop, "build"), 1, False, None),
}


CASES = ([(m, signal.SIGTERM) for m in MOMENTS]
         + [(m, signal.SIGINT) for m in ("mid-training", "while a save is in flight")])


@pytest.mark.parametrize("moment,sig", CASES,
                         ids=[f"{m}-{signal.Signals(s).name}" for m, s in CASES])
def test_signal_saves_the_step_and_resume_is_bit_for_bit(reference, tmp_path, monkeypatch,
                                                         moment, sig):
  (owner, name), count, after, stopped_at = MOMENTS[moment]
  wd = str(tmp_path / "wd")
  with monkeypatch.context() as m:
    _signal_at(m, owner, name, count, sig, after)
    with pytest.raises(loop.TrainingInterrupted) as e:
      loop.train(smoke_config(), wd, progress=False)
  msg = str(e.value)
  assert e.value.signum == sig and e.value.step == stopped_at, msg
  assert "\n" not in msg and signal.Signals(sig).name in msg
  assert os.path.getsize(os.path.join(wd, lock_lib.LOCK_NAME)) == 0  # released
  if stopped_at is None:
    assert "nothing to save" in msg
    assert not ckpt_lib.has_checkpoint(wd)
  else:
    assert f"saved checkpoint {stopped_at}" in msg
    ck = ckpt_lib.Checkpointer(wd, create=False)
    assert ck.latest_step() == stopped_at
    ck.close()
    # Rows up to the saved step, each once: nothing for the resumed run to drop.
    assert [r["step"] for r in metrics.read_metrics(wd) if "loss" in r] == list(
        range(1, stopped_at + 1))
  assert loop.train(smoke_config(), wd, progress=False)["step"] == STEPS
  assert _rows(wd) == _rows(reference)
  for a, b in zip(_final_params(wd), _final_params(reference)):
    np.testing.assert_array_equal(a, b)


def test_a_second_signal_does_not_abort_the_save(reference, tmp_path, monkeypatch, caplog):
  wd = str(tmp_path / "wd")
  original = data.Batches.__next__
  calls = [0]

  def twice(self):
    calls[0] += 1
    if calls[0] == 3:
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)
    return original(self)

  monkeypatch.setattr(data.Batches, "__next__", twice)
  with pytest.raises(loop.TrainingInterrupted) as e:
    loop.train(smoke_config(), wd, progress=False)
  assert e.value.step == 3
  assert any("SIGINT again" in r.getMessage() for r in caplog.records)
  monkeypatch.undo()
  loop.train(smoke_config(), wd, progress=False)
  assert _rows(wd) == _rows(reference)


@pytest.mark.parametrize("sig,rc", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_exit_status_is_128_plus_the_signal_and_one_line(tmp_path, monkeypatch, capsys,
                                                              sig, rc):
  wd = str(tmp_path / "wd")
  _signal_at(monkeypatch, data.Batches, "__next__", 4, sig)
  from dgmjax import cli
  assert cli.main(["train", f"--config={CONFIG}:smoke", f"--workdir={wd}",
                   "--config.train.num_samples=0"]) == rc
  captured = capsys.readouterr()
  assert captured.out == ""  # no summary
  lines = [ln for ln in captured.err.splitlines() if ln.strip() and "%|" not in ln]  # no bar
  assert lines == [
      f"dgmjax: stopped by {signal.Signals(sig).name} after step 4: saved checkpoint 4 in "
      f"{os.path.join(wd, 'checkpoints')}; rerun the same command to resume"]


@pytest.mark.slow  # two CLI runs: 15 s alone, 40 s on a busy 2-core machine
def test_cli_sigterm_from_outside_exits_143_with_one_line_then_resumes(tmp_path):
  """A real SIGTERM at whatever moment the trainer is in (here: once it has logged a few
  steps of a run far too long to end first), through ``dgmjax train``."""
  wd = str(tmp_path / "wd")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, "-m", "dgmjax", "train", f"--config={CONFIG}:smoke",
         f"--workdir={wd}", "--config.train.log_every=1", "--config.train.eval_every=100000",
         "--config.train.checkpoint_every=100000", "--config.train.num_samples=0"]
  p = subprocess.Popen(cmd + ["--config.train.num_steps=100000"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while len(metrics.read_metrics(wd)) < 3 and time.time() < deadline and p.poll() is None:
      time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
  finally:
    if p.poll() is None:
      p.kill()
      p.wait()
  assert p.returncode == 143, err[-2000:]
  lines = [ln for ln in err.splitlines() if ln.startswith("dgmjax")]
  assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
  saved = int(lines[0].split("saved checkpoint ")[1].split()[0])
  assert lines[0].startswith(f"dgmjax: stopped by SIGTERM after step {saved}: saved")
  assert out == ""
  assert [r["step"] for r in metrics.read_metrics(wd) if "loss" in r] == list(
      range(1, saved + 1))
  r = subprocess.run(cmd + [f"--config.train.num_steps={saved + 3}"], env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == saved + 3
  assert [r["step"] for r in metrics.read_metrics(wd) if "loss" in r] == list(
      range(1, saved + 4))
