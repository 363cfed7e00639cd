"""Each file of a workdir damaged in turn: the trainer and the research commands either
recover with one warning naming the file, or stop with one line naming it and what to
do. Never a traceback, never a wedge, no finished work lost."""

import fcntl
import json
import logging
import math
import os
import shutil
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import cli
from dgmjax.commands import sampling, workdirs
from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import lock as lock_lib
from dgmjax.train import loop, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")


def smoke_config(**train):
  c = config_lib.load_config(CONFIG + ":smoke")
  c.train.update(dict(log_every=1, num_samples=0, checkpoint_every=10, eval_every=10))
  c.train.update(train)
  return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """20 steps; checkpoints 10 and 20, both evaluated (20 is the best)."""
  wd = str(tmp_path_factory.mktemp("finished"))
  loop.train(smoke_config(num_steps=20), wd, progress=False)
  return wd


@pytest.fixture
def wd(finished_run, tmp_path):
  dst = str(tmp_path / "wd")
  shutil.copytree(finished_run, dst)
  return dst


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
          and r.name == "dgmjax"]


def _loss_steps(wd):
  return [r["step"] for r in metrics.read_metrics(wd) if "loss" in r]


def _cli(capsys, *argv):
  rc = cli.main(list(argv))
  err = capsys.readouterr().err.strip()
  return rc, err


@pytest.mark.parametrize("garbage", ["", "{\"test_bpd\": ", "[1, 2]", "{\"test_bpd\": \"x\"}",
                                     "\xff\xfe"])
def test_damaged_orbax_metrics_file_is_recovered_from_the_meta(wd, garbage, caplog):
  path = os.path.join(wd, "checkpoints", "20", "metrics", "metrics")
  with open(path, "w", encoding="latin-1") as f:
    f.write(garbage)
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    _, state = loop.restore_for_eval(smoke_config(), wd, "best")  # eval/sample: read-only
  assert int(state.step) == 20
  with open(path, encoding="latin-1") as f:
    assert f.read() == garbage  # eval changes nothing
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    summary = loop.train(smoke_config(num_steps=30), wd, progress=False)
  assert summary["step"] == 30
  warned = [w for w in _warnings(caplog) if path in w]
  assert warned and all("\n" not in w for w in warned)
  with open(path) as f:
    assert json.load(f)["test_bpd"] > 0  # the trainer rewrote it
  assert _loss_steps(wd) == list(range(1, 31))


def test_damaged_metrics_file_without_a_figure_in_the_meta_counts_as_not_evaluated(wd, caplog):
  for step in ("10", "20"):
    with open(os.path.join(wd, "checkpoints", step, "metrics", "metrics"), "w") as f:
      f.write("garbage")
    meta = os.path.join(wd, "checkpoints", step, "meta", "metadata")
    with open(meta) as f:
      m = json.load(f)
    m.pop("test_bpd")  # as written before meta carried it
    with open(meta, "w") as f:
      json.dump(m, f)
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    _, state = loop.restore_for_eval(smoke_config(), wd, "best")
  assert int(state.step) == 20  # no evaluated checkpoint left: the newest
  assert any("counts as not evaluated" in w for w in _warnings(caplog))


@pytest.mark.parametrize("garbage", [b"null\n", b'{"step": "abc", "loss": 1}\n',
                                     b"\xff\xfe\x00garbage\n", b"[1, 2]\n", b"{\"step\": nan}\n"])
def test_damaged_metrics_jsonl_lines_are_dropped_with_one_warning(wd, garbage, caplog):
  path = os.path.join(wd, "metrics.jsonl")
  with open(path, "rb") as f:
    lines = f.readlines()
  lines.insert(5, garbage)
  with open(path, "wb") as f:
    f.writelines(lines)
  assert _loss_steps(wd) == list(range(1, 21))  # read_metrics skips it
  with caplog.at_level(logging.WARNING, logger="dgmjax"):
    loop.train(smoke_config(num_steps=25), wd, progress=False)
  warned = [w for w in _warnings(caplog) if "metrics.jsonl" in w]
  assert len(warned) == 1 and "dropped 1 damaged line" in warned[0], warned
  assert _loss_steps(wd) == list(range(1, 26))
  with open(path, "rb") as f:
    assert garbage not in f.read()


def test_restart_after_a_crash_before_the_first_checkpoint_writes_each_row_once(tmp_path,
                                                                               monkeypatch):
  wd = str(tmp_path / "wd")
  cfg = smoke_config(num_steps=12, checkpoint_every=100, eval_every=100)
  real = loop.evaluate

  def crash(*a, **k):
    raise RuntimeError("simulated crash")

  monkeypatch.setattr(loop, "evaluate", crash)  # the first evaluation is at step 12
  with pytest.raises(RuntimeError, match="simulated crash"):
    loop.train(cfg, wd, progress=False)
  assert _loss_steps(wd) == list(range(1, 13)) and not ckpt_lib.has_checkpoint(wd)
  monkeypatch.setattr(loop, "evaluate", real)
  loop.train(cfg, wd, progress=False)
  assert _loss_steps(wd) == list(range(1, 13))


def test_num_steps_below_or_at_the_checkpoint(wd, capsys):
  with pytest.raises(ValueError, match=r"checkpoint of step 20, past train.num_steps=15"):
    loop.train(smoke_config(num_steps=15), wd, progress=False)
  summary = loop.train(smoke_config(num_steps=20), wd, progress=False)
  json.dumps(summary, allow_nan=False)  # valid JSON: no NaN or Infinity
  assert summary["step"] == 20 and summary["loss"] is None
  rc, err = _cli(capsys, "train", f"--config={CONFIG}:smoke", f"--workdir={wd}",
                 "--config.train.num_steps=15")
  assert rc == 2 and len(err.splitlines()) == 1 and "num_steps=15" in err, err


def test_lock_file_holding_a_json_list_or_garbage(wd, capsys):
  path = os.path.join(wd, lock_lib.LOCK_NAME)
  for content in (b"[1, 2]", b"\xff\x00 not json", b'{"pid": "x", "host": 3}'):
    with open(path, "wb") as f:
      f.write(content)
    # Held by someone whose record is damaged: refused, one line, no traceback.
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
      with pytest.raises(lock_lib.WorkdirLocked, match="holder unknown"):
        loop.train(smoke_config(num_steps=21), wd, progress=False)
    finally:
      os.close(fd)
  # Not held: taken over.
  assert loop.train(smoke_config(num_steps=21), wd, progress=False)["step"] == 21
  os.remove(path)
  os.makedirs(path)  # a directory where the lock file should be
  rc, err = _cli(capsys, "train", f"--config={CONFIG}:smoke", f"--workdir={wd}",
                 "--config.train.num_steps=22")
  assert rc == 2 and len(err.splitlines()) == 1 and path in err and "remove it" in err, err


def test_quarantine_that_is_not_a_directory_stops_with_one_line(wd, capsys):
  with open(os.path.join(wd, "checkpoints", "20", "meta", "metadata"), "w") as f:
    f.write("{")
  with open(os.path.join(wd, "quarantine"), "w") as f:
    f.write("a file, not a directory")
  rc, err = _cli(capsys, "train", f"--config={CONFIG}:smoke", f"--workdir={wd}",
                 "--config.train.num_steps=25")
  lines = [ln for ln in err.splitlines() if ln.startswith("dgmjax")]
  assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
  assert os.path.join(wd, "checkpoints", "20") in lines[0] and "by hand" in lines[0]
  os.remove(os.path.join(wd, "quarantine"))  # what the line says to do; then it resumes
  assert loop.train(smoke_config(num_steps=25), wd, progress=False)["step"] == 25
  assert _loss_steps(wd) == list(range(1, 26))


def test_damaged_config_json_is_named(tmp_path, wd, capsys):
  bare = str(tmp_path / "bare")
  os.makedirs(bare)
  for garbage in (b"{", b"\xff\xfe", b"[1]", b"null"):
    with open(os.path.join(bare, workdirs.CONFIG_FILE), "wb") as f:
      f.write(garbage)
    with pytest.raises(ValueError, match="config.json"):
      workdirs.stored_config(bare)
  # Beside checkpoints whose meta holds the config, config.json is not needed.
  shutil.copy(os.path.join(bare, workdirs.CONFIG_FILE), wd)
  rc, err = _cli(capsys, "eval", f"--workdir={wd}")
  assert rc == 0, err
  # When no checkpoint meta reads, the damaged config.json is named in one line.
  for step in ("10", "20"):
    with open(os.path.join(wd, "checkpoints", step, "meta", "metadata"), "w") as f:
      f.write("{")
  rc, err = _cli(capsys, "eval", f"--workdir={wd}")
  lines = [ln for ln in err.splitlines() if ln.startswith("dgmjax")]
  assert rc == 2 and len(lines) == 1 and "config.json is damaged" in lines[0], err
  assert "Traceback" not in err


def test_damaged_readjusted_bn_cache_is_rebuilt(tmp_path, caplog):
  from dgmjax.nvae.model import READJUSTED
  stats = {"layer": {"mean": jnp.arange(3.0), "var": jnp.ones(3)}}
  calls = []

  class Model:
    def readjust_bn(self, variables, rng, num, temperature, iters):
      calls.append(1)
      return {READJUSTED: jax_tree_scale(variables["batch_stats"], 2.0)}

  state = SimpleNamespace(step=7, variables=lambda ema: {"params": {"w": jnp.ones(2)},
                                                         "batch_stats": stats})
  exp = SimpleNamespace(model=Model())
  wd = str(tmp_path)
  first, path, reused = sampling.readjusted_stats(exp, state, wd, 1.0, 4, 2)
  assert not reused and len(calls) == 1
  _, _, reused = sampling.readjusted_stats(exp, state, wd, 1.0, 4, 2)
  assert reused and len(calls) == 1
  damages = [lambda: _write(os.path.join(path, "_METADATA"), b"garbage"),
             lambda: os.remove(os.path.join(path, "manifest.ocdbt")),
             lambda: (shutil.rmtree(path), _write(path, b"a file"))]
  for i, damage in enumerate(damages):
    damage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dgmjax"):
      again, path2, reused = sampling.readjusted_stats(exp, state, wd, 1.0, 4, 2)
    assert path2 == path and not reused and len(calls) == 2 + i
    warned = [w for w in _warnings(caplog) if path in w]
    assert len(warned) == 1 and "re-estimating" in warned[0], warned
    np.testing.assert_array_equal(np.asarray(again[READJUSTED]["layer"]["mean"]),
                                  np.asarray(first[READJUSTED]["layer"]["mean"]))
    _, _, reused = sampling.readjusted_stats(exp, state, wd, 1.0, 4, 2)
    assert reused


def jax_tree_scale(tree, k):
  import jax
  return jax.tree.map(lambda x: x * k, tree)


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)


def test_truncated_and_empty_pt_files_say_so(tmp_path):
  torch = pytest.importorskip("torch")
  from dgmjax.convert import common
  good = str(tmp_path / "good.pt")
  torch.save({"w": torch.zeros(64)}, good)
  with open(good, "rb") as f:
    data = f.read()
  for name, content, word in (("empty.pt", b"", "is empty"),
                              ("half.pt", data[:len(data) // 2], "is truncated"),
                              ("head.pt", data[:100], "is truncated")):
    _write(str(tmp_path / name), content)
    with pytest.raises(ValueError) as e:
      common.load_checkpoint(str(tmp_path / name))
    assert word in str(e.value) and "allow-list" not in str(e.value), str(e.value)
  legacy = str(tmp_path / "legacy.pt")
  torch.save({"w": torch.zeros(64)}, legacy, _use_new_zipfile_serialization=False)
  with open(legacy, "rb") as f:
    data = f.read()
  _write(legacy, data[:len(data) // 2])
  with pytest.raises(ValueError, match="is truncated"):
    common.load_checkpoint(legacy)
  assert math.isfinite(float(common.load_checkpoint(good)["w"].sum()))
