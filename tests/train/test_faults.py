"""Faults as they happen to long runs: a workdir of the earlier two-manager layout, a
corrupt newest checkpoint, two trainers on one workdir, a killed trainer's lock,
non-finite updates, metrics rewritten on resume, bad settings, recompiling samplers."""

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from dgmjax import data
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import lock as lock_lib
from dgmjax.train import loop, metrics, optim as optim_lib, state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")


def smoke_config(**train):
  c = config_lib.load_config(CONFIG + ":smoke")
  c.train.update(dict(log_every=1, num_samples=0))
  c.train.update(train)
  return c


def _steps(workdir, key="loss"):
  return [r["step"] for r in metrics.read_metrics(workdir) if key in r]


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read_metrics(workdir) if "loss" in r}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """20 steps, checkpoints at 10 and 20, evaluation (and the best checkpoint) at 20."""
  wd = str(tmp_path_factory.mktemp("finished"))
  loop.train(smoke_config(num_steps=20, checkpoint_every=10, eval_every=100), wd,
             progress=False)
  return wd


def _copy(src, tmp_path):
  dst = str(tmp_path / "wd")
  shutil.copytree(src, dst)
  return dst


def _legacy_layout(wd):
  """The earlier two-manager layout: the evaluated step 20 also under best/."""
  os.makedirs(os.path.join(wd, "best"))
  shutil.copytree(os.path.join(wd, "checkpoints", "20"), os.path.join(wd, "best", "20"))
  shutil.rmtree(os.path.join(wd, "checkpoints", "20", "metrics"))


def test_workdir_of_the_two_manager_layout_is_read_then_migrated(finished_run, tmp_path,
                                                                 caplog):
  wd = _copy(finished_run, tmp_path)
  _legacy_layout(wd)
  _, state = loop.restore_for_eval(smoke_config(), wd, "best")  # read as it is
  assert int(state.step) == 20 and os.path.isdir(os.path.join(wd, "best", "20"))
  shutil.rmtree(os.path.join(wd, "checkpoints", "20"))  # killed before the regular save
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    summary = loop.train(smoke_config(num_steps=30, checkpoint_every=10, eval_every=100), wd,
                         progress=False)
  moved = [r.getMessage() for r in caplog.records if "earlier layout" in r.getMessage()]
  assert len(moved) == 1 and "step 20" in moved[0], moved
  assert summary["step"] == 30 and _steps(wd) == list(range(1, 31))
  assert not os.path.exists(os.path.join(wd, "best"))
  ck = ckpt_lib.Checkpointer(wd)
  assert ck.best_step() == 30 and sorted(ck.manager.all_steps()) == [10, 20, 30]
  # Re-reaching a step that is already saved is a no-op, not StepAlreadyExistsError.
  cfg = smoke_config(num_steps=30)
  exp = loop.build(cfg)
  target = loop.abstract_state(exp, optim_lib.make_optimizer(cfg.optim, 30))
  restored = ck.restore_newest(target)
  assert restored.step == 30 and restored.kind == "best"
  assert ck.save(restored.step, restored.state, restored.meta) is False
  ck.close()


def _truncate_largest_data_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs if os.sep + "d" + os.sep in os.path.join(d, f) + os.sep]
  victim = max(files, key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)


def _remove_manifests(step_dir):
  for d, _, fs in os.walk(step_dir):
    for f in fs:
      if f == "manifest.ocdbt":
        os.remove(os.path.join(d, f))


def _garbage_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
    f.write('{"data": {"epoch": 0, "ind')


def _empty_state(step_dir):
  state = os.path.join(step_dir, "state")
  shutil.rmtree(state)
  os.makedirs(state)


@pytest.mark.parametrize("corrupt", [_truncate_largest_data_file, _remove_manifests,
                                     _garbage_meta, _empty_state])
def test_corrupt_newest_checkpoint_is_skipped_named_and_quarantined(finished_run, tmp_path,
                                                                     corrupt, caplog):
  wd = _copy(finished_run, tmp_path)
  corrupt(os.path.join(wd, "checkpoints", "20"))
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    summary = loop.train(smoke_config(num_steps=25, checkpoint_every=10, eval_every=100), wd,
                         progress=False)
  skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
  assert len(skipped) == 1 and os.path.join("checkpoints", "20") in skipped[0], skipped
  assert [n.split("-")[:2] for n in os.listdir(os.path.join(wd, "quarantine"))] == [
      ["checkpoints", "20"]]
  # Resumed from step 10: steps 11-20 ran again and equal the first run's.
  assert summary["step"] == 25
  assert _steps(wd) == list(range(1, 26))
  first, again = _losses(finished_run), _losses(wd)
  for s in range(11, 21):
    np.testing.assert_allclose(again[s], first[s], rtol=1e-6)


def test_eval_skips_a_corrupt_best_checkpoint_and_changes_nothing(finished_run, tmp_path,
                                                                  caplog):
  wd = _copy(finished_run, tmp_path)
  _garbage_meta(os.path.join(wd, "checkpoints", "20"))
  before = sorted(os.listdir(wd))
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    _, state = loop.restore_for_eval(smoke_config(), wd, "best")
  assert int(state.step) == 10  # the best (20) is damaged: the newest other one
  assert any("skipping checkpoint" in r.getMessage() for r in caplog.records)
  assert sorted(os.listdir(wd)) == before
  assert os.path.isdir(os.path.join(wd, "checkpoints", "20"))


def test_second_trainer_is_refused_and_a_killed_trainers_lock_is_taken_over(tmp_path):
  wd = str(tmp_path / "wd")
  code = ("import sys; from dgmjax.train import config as C, loop;"
          f"c = C.load_config({CONFIG + ':smoke'!r});"
          "c.train.update(dict(num_steps=100000, eval_every=100000, checkpoint_every=100000,"
          "num_samples=0, log_every=1000));"
          "loop.train(c, sys.argv[1], progress=False)")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  first = subprocess.Popen([sys.executable, "-c", code, wd], env=env,
                           stderr=subprocess.DEVNULL)
  try:
    lock_path = os.path.join(wd, lock_lib.LOCK_NAME)
    deadline = time.time() + 120
    while time.time() < deadline:
      if os.path.exists(lock_path) and os.path.getsize(lock_path) > 0:
        break
      assert first.poll() is None, "the first trainer died"
      time.sleep(0.2)
    with open(lock_path) as f:
      assert json.load(f)["pid"] == first.pid
    with pytest.raises(lock_lib.WorkdirLocked, match=f"pid {first.pid} on host"):
      loop.train(smoke_config(num_steps=5), wd, progress=False)
    # Through the CLI: one line, exit 2, and nothing written by the refused trainer.
    r = subprocess.run([sys.executable, "-m", "dgmjax", "train", f"--config={CONFIG}:smoke",
                        f"--workdir={wd}"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("dgmjax: error: workdir") and str(first.pid) in r.stderr
    assert not os.path.exists(os.path.join(wd, "metrics.jsonl"))
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The kernel released the dead trainer's lock: the next one takes over.
  summary = loop.train(smoke_config(num_steps=5, checkpoint_every=5, eval_every=5), wd,
                       progress=False)
  assert summary["step"] == 5
  assert os.path.getsize(os.path.join(wd, lock_lib.LOCK_NAME)) == 0  # released on exit


def test_nonfinite_new_parameters_are_skipped_like_nonfinite_gradients():
  """A NaN learning rate leaves loss and gradients finite but makes the update NaN."""
  cfg = smoke_config()
  exp = loop.build(cfg)
  for tx in (optax.sgd(float("nan")), optax.sgd(1e39)):  # 1e39 overflows float32 params
    state = loop.init_state(exp, tx)
    before = np.asarray(state.params["logits"])
    step = state_lib.make_train_step(exp.model, tx, ema_decay=0.0, mesh=exp.mesh)
    batches = data.Batches(exp.train_data, cfg.train.batch_size, seed=0)
    state, m = step(state, state_lib.shard_batches(next(batches), exp.mesh), jax.random.key(0))
    assert math.isfinite(float(m["loss"])) and int(m["skipped"]) == 1
    assert int(state.skipped) == 1 and int(state.nonfinite) == 1
    np.testing.assert_array_equal(np.asarray(state.params["logits"]), before)
    leaves = jax.tree.leaves(state.opt_state) + jax.tree.leaves(state.ema_params)
    assert all(np.all(np.isfinite(np.asarray(l))) for l in leaves)


def test_diverging_run_stops_and_its_named_checkpoint_is_finite(tmp_path):
  """lr 1e39 with no warm-up: every update overflows; the run stops after max_nonfinite
  and the checkpoint the error names holds finite parameters."""
  wd = str(tmp_path)
  loop.train(smoke_config(num_steps=4, checkpoint_every=4, eval_every=100), wd,
             progress=False)
  cfg = smoke_config(num_steps=40, checkpoint_every=2, eval_every=100, max_nonfinite=3)
  cfg.optim.lr = 1e39
  with pytest.raises(loop.TrainingDiverged, match=r"finite state of step (\d+)") as e:
    loop.train(cfg, wd, progress=False)
  step = int(e.value.args[0].split("finite state of step ")[1].split(".")[0])
  assert step >= 4
  exp = loop.build(cfg)
  ck = ckpt_lib.Checkpointer(wd)
  tx = optim_lib.make_optimizer(cfg.optim, cfg.train.num_steps)
  state, _ = ck.restore(loop.abstract_state(exp, tx), step)
  ck.close()
  for leaf in jax.tree.leaves(state.params):
    assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize("section,key,value,match", [
    ("optim", "lr", float("nan"), "optim.lr"),
    ("optim", "lr", 0.0, "optim.lr"),
    ("optim", "lr", float("inf"), "optim.lr"),
    ("optim", "ema_decay", 1.0, "ema_decay"),
    ("train", "checkpoint_every", 0, "checkpoint_every"),
    ("train", "eval_every", 0, "eval_every"),
    ("train", "batch_size", 0, "batch_size"),
    ("train", "eval_batch_size", -1, "eval_batch_size"),
    ("train", "log_every", 0, "log_every"),
])
def test_bad_settings_are_refused_before_anything_is_built(tmp_path, section, key, value,
                                                           match, monkeypatch):
  cfg = smoke_config()
  cfg[section][key] = value
  monkeypatch.setattr(loop, "build", lambda *a: pytest.fail("built before validating"))
  with pytest.raises(ValueError, match=match):
    loop.train(cfg, str(tmp_path / "wd"), progress=False)
  assert not os.path.exists(tmp_path / "wd")


def test_metrics_rows_after_the_restored_step_are_dropped(tmp_path):
  wd = str(tmp_path)
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    for s in range(1, 8):
      f.write(json.dumps({"step": s, "loss": float(s)}) + "\n")
    f.write('{"step": 8, "lo')  # torn by a kill mid-write
  w = metrics.MetricWriter(wd, tensorboard=False, resume_step=5)
  w.write(6, loss=60.0)
  w.close()
  assert [(r["step"], r["loss"]) for r in metrics.read_metrics(wd)] == [
      (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 60.0)]


def test_sampler_and_eval_step_compile_once_per_run():
  exp = loop.build(smoke_config())
  state = loop.init_state(exp, optax.adam(1e-3))
  traces = {"sample": 0, "log_prob": 0}
  model = exp.model

  class Counting:
    image_shape, num_bins, num_dims, num_classes = (model.image_shape, model.num_bins,
                                                    model.num_dims, None)

    def sample(self, *a, **k):
      traces["sample"] += 1
      return model.sample(*a, **k)

    def log_prob(self, *a, **k):
      traces["log_prob"] += 1
      return model.log_prob(*a, **k)

  exp.model = Counting()
  v = state.variables()
  for i in range(3):
    loop.draw_samples(exp, v, 8, jax.random.key(i))
    loop.evaluate(exp, v)
  assert traces == {"sample": 1, "log_prob": 1}
  with pytest.raises(ValueError, match="int >= 1"):
    loop.draw_samples(exp, v, 0, jax.random.key(0))


def test_checkpoint_of_another_config_is_an_error_not_damage(finished_run, tmp_path):
  """A different optimiser state layout must not be mistaken for corruption: nothing is
  quarantined, and the error names the checkpoint and the differing arrays."""
  wd = _copy(finished_run, tmp_path)
  cfg = smoke_config(num_steps=30)
  cfg.optim.clip_norm = 1.0  # adds a clipping state to opt_state
  with pytest.raises(ckpt_lib.IncompatibleCheckpoint, match="another model or optimiser"):
    loop.train(cfg, wd, progress=False)
  assert not os.path.exists(os.path.join(wd, "quarantine"))
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["10", "20"]
