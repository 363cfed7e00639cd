"""The training loop end to end on `digits` with the independent baseline.

Covers: compile-once, NaN skipping and stopping, SIGKILL-and-resume equality, an
interrupted checkpoint ignored, config typos rejected, the baseline beating a uniform
model, evaluation over the whole test split, and 1 vs 4 devices.
"""

import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import data, images, models
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import loop, metrics, optim, state as state_lib

from train_helpers import NaNAtSteps  # noqa: E402  (tests/train on sys.path via rootdir)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_and_kill.py")


def smoke_config(**train):
  c = config_lib.load_config(CONFIG + ":smoke")
  c.train.update(train)
  return c


def _losses(workdir):
  """step -> loss of the LAST row written for that step (a resumed run rewrites some)."""
  return {r["step"]: r["loss"] for r in metrics.read_metrics(workdir) if "loss" in r}


def _run_driver(workdir, kill_at, *overrides):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, DRIVER, CONFIG + ":smoke", workdir, str(kill_at),
                         *overrides], env=env, capture_output=True, text=True, timeout=300)


def test_train_step_compiles_once():
  exp = loop.build(smoke_config())
  tx = optim.make_optimizer(exp.config.optim, 10)
  state = loop.init_state(exp, tx)
  traces = []
  model = exp.model

  class Counting:
    def loss(self, *a, **k):
      traces.append(1)
      return model.loss(*a, **k)

  step = state_lib.make_train_step(Counting(), tx, ema_decay=0.9, mesh=exp.mesh)
  batches = data.Batches(exp.train_data, 32, seed=0)
  rng = jax.random.key(0)
  for _ in range(4):
    state, m = step(state, state_lib.shard_batches(next(batches), exp.mesh), rng)
    float(m["loss"])
  assert len(traces) == 1
  assert int(state.step) == 4


def test_baseline_beats_uniform_and_eval_covers_whole_split(tmp_path):
  summary = loop.train(smoke_config(num_steps=60, eval_every=60, checkpoint_every=60),
                       str(tmp_path), progress=False)
  uniform = math.log2(17)
  assert summary["test_bpd"] < uniform - 0.5
  # Evaluation equals the exact per-image average over all 300 test digits.
  exp, st = loop.restore_for_eval(smoke_config(), str(tmp_path), "last")
  test = exp.test_data
  x = test.get(np.arange(len(test)))
  logp = exp.model.log_prob(st.variables(ema=True), x)
  expected = float(images.bits_per_dim(jnp.mean(logp), (8, 8, 1)))
  np.testing.assert_allclose(loop.evaluate(exp, st.variables(ema=True)), expected, rtol=1e-5)
  assert os.path.exists(tmp_path / "samples" / "step_0000060.png")
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def test_nonfinite_updates_are_skipped_then_training_stops(tmp_path, monkeypatch):
  # Steps 3 and 4 are NaN: skipped, params unchanged, training goes on.
  cfg = smoke_config(num_steps=8, log_every=1, eval_every=100, checkpoint_every=2)
  exp = loop.build(cfg)
  nan_model = NaNAtSteps(image_shape=(8, 8, 1), num_bins=17, nan_steps=(3, 4))
  tx = optim.make_optimizer(cfg.optim, 8)
  state = loop.init_state(exp, tx)
  step = state_lib.make_train_step(nan_model, tx, ema_decay=0.0, mesh=exp.mesh)
  batches = data.Batches(exp.train_data, cfg.train.batch_size, seed=0)
  rng = jax.random.key(0)
  params = []
  for _ in range(6):
    state, m = step(state, state_lib.shard_batches(next(batches), exp.mesh), rng)
    params.append(np.asarray(state.params["logits"]))
  assert int(state.skipped) == 2 and int(state.nonfinite) == 0
  np.testing.assert_array_equal(params[3], params[2])
  np.testing.assert_array_equal(params[4], params[2])
  assert not np.array_equal(params[5], params[4])

  # Always NaN from step 4 on: stops after max_nonfinite in a row, checkpoint 4 intact.
  cfg = smoke_config(num_steps=30, log_every=1, eval_every=100, checkpoint_every=4,
                     max_nonfinite=3)
  real_create = models.create
  monkeypatch.setattr(models, "create", lambda name, **kw: NaNAtSteps(
      nan_steps=tuple(range(4, 40)), **kw))
  with pytest.raises(loop.TrainingDiverged, match="max_nonfinite=3"):
    loop.train(cfg, str(tmp_path), progress=False)
  monkeypatch.setattr(models, "create", real_create)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  assert ck.latest_step() == 4
  ck.close()


@pytest.mark.slow  # three CLI runs (~22 s); resume = uninterrupted is also test_preemption's
def test_sigkill_and_resume_gives_the_same_losses(tmp_path):
  over = ["train.num_steps=40", "train.log_every=1", "train.checkpoint_every=10",
          "train.eval_every=1000", "train.num_samples=0"]
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  r = _run_driver(full, 0, *over)
  assert r.returncode == 0, r.stderr[-3000:]
  r = _run_driver(killed, 27, *over)
  assert r.returncode == -9, (r.returncode, r.stderr[-3000:])
  ck = ckpt_lib.Checkpointer(killed)
  resumed_from = ck.latest_step()
  ck.close()
  assert resumed_from in (10, 20)
  r = _run_driver(killed, 0, *over)
  assert r.returncode == 0, r.stderr[-3000:]
  a, b = _losses(full), _losses(killed)
  assert sorted(a) == sorted(b) == list(range(1, 41))
  for s in range(resumed_from + 1, 41):
    np.testing.assert_allclose(b[s], a[s], rtol=1e-6, err_msg=f"step {s}")


def test_interrupted_checkpoint_is_never_restored(tmp_path):
  cfg = smoke_config(num_steps=10, eval_every=100, checkpoint_every=10)
  loop.train(cfg, str(tmp_path), progress=False)
  ckdir = tmp_path / "checkpoints"
  # A write of step 20 cut short: orbax's temporary directory, half its files gone.
  partial = ckdir / "20.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(ckdir / "10", partial)
  shutil.rmtree(partial / "state")
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  assert ck.latest_step() == 10
  ck.close()
  cfg2 = smoke_config(num_steps=12, eval_every=100, checkpoint_every=10, log_every=1)
  summary = loop.train(cfg2, str(tmp_path), progress=False)
  assert summary["step"] == 12
  steps = [r["step"] for r in metrics.read_metrics(str(tmp_path)) if "loss" in r]
  assert steps[-2:] == [11, 12]  # resumed from 10, not from the broken 20


def test_config_typos_are_rejected():
  c = smoke_config()
  with pytest.raises(AttributeError):
    c.train.num_stesp = 3
  from dgmjax import cli
  assert cli.main(["train", f"--config={CONFIG}:smoke", "--workdir=/tmp/never",
                   "--config.train.num_stesp=3"]) == 2
  with pytest.raises(ValueError, match="smoke"):
    config_lib.load_config(CONFIG + ":smok")


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_losses(tmp_path):
  code = ("import json,sys;from dgmjax.train import config as C, loop;"
          f"c=C.load_config({CONFIG + ':smoke'!r});"
          "c.train.update(dict(num_steps=12,log_every=1,eval_every=12,checkpoint_every=100,"
          "num_samples=0,batch_size=32,eval_batch_size=64));"
          "s=loop.train(c, sys.argv[1], progress=False);"
          "import jax;print('DEVICES', jax.device_count())")
  out = {}
  for n in (1, 4):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               PYTHONPATH=ROOT)
    wd = str(tmp_path / f"d{n}")
    r = subprocess.run([sys.executable, "-c", code, wd], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"DEVICES {n}" in r.stdout
    rows = metrics.read_metrics(wd)
    out[n] = ([r["loss"] for r in rows if "loss" in r], [r["test_bpd"] for r in rows
                                                          if "test_bpd" in r])
  np.testing.assert_allclose(out[4][0], out[1][0], rtol=1e-5)
  np.testing.assert_allclose(out[4][1], out[1][1], rtol=1e-5)


@pytest.mark.slow
def test_class_conditional_glow_trains_with_labels(tmp_path):
  """A model with ``num_classes`` gets the labels in init, loss, evaluation and sampling."""
  c = config_lib.load_config(os.path.join(ROOT, "experiments", "configs", "glow_digits.py")
                             + ":smoke")
  with c.unlocked():
    c.model.num_classes = 10
  c.train.update(dict(num_steps=6, eval_every=6, checkpoint_every=6, log_every=1,
                      num_samples=10))
  summary = loop.train(c, str(tmp_path), progress=False)
  assert math.isfinite(summary["test_bpd"])
  assert os.path.exists(tmp_path / "samples" / "step_0000006.png")
  # The evaluation really uses each image's own label: wrong labels score differently.
  exp, st = loop.restore_for_eval(c, str(tmp_path), "last")
  x = exp.test_data.get(np.arange(32))
  y = exp.test_data.labels(np.arange(32))
  v = st.variables(ema=True)
  rng = jax.random.key(0)
  right = exp.model.log_prob(v, x, rng, y=jnp.asarray(y))
  wrong = exp.model.log_prob(v, x, rng, y=jnp.asarray((y + 1) % 10))
  assert not np.allclose(np.asarray(right), np.asarray(wrong))
  eval_fn = state_lib.make_eval_step(exp.model, mesh=exp.mesh)
  batch = state_lib.shard_batches({"image": x, "label": y.astype(np.int32)}, exp.mesh)
  np.testing.assert_allclose(np.asarray(eval_fn(v, batch, rng)), np.asarray(right),
                             rtol=1e-5)


def test_label_batches_follow_the_images():
  ds = data.load("digits", "train")
  b = data.Batches(ds, 16, seed=3, labels=True)
  for _ in range(3):
    batch = next(b)
  x, y = batch["image"], batch["label"]
  b2 = data.Batches(ds, 16, seed=3)
  for _ in range(3):
    x2 = next(b2)["image"]
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, ds.labels(b.indices(0, 2)))
  with pytest.raises(ValueError, match="labels"):
    data.Batches(data.load("synthetic", "train"), 16, seed=0, labels=True)
