"""A full disk: a save (or a metrics/TensorBoard write) that fails with ENOSPC stops the
run with one line that says so and names the path, never a hang; the earlier
checkpoints stay intact and the run resumes from them once there is space again.

Two ways: ENOSPC injected at orbax's JSON write (in-process, fast), and a real full
disk, a small tmpfs mounted in a private mount namespace (``unshare -rm``; skipped where
that is not allowed).
"""

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import lock as lock_lib
from dgmjax.train import loop, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "experiments", "configs", "independent_digits.py")
TRAIN = dict(num_steps=30, checkpoint_every=5, eval_every=10, log_every=1, num_samples=0,
             keep_checkpoints=2)


def smoke_config(**train):
  c = config_lib.load_config(CONFIG + ":smoke")
  c.train.update(dict(TRAIN, **train))
  return c


def _rows(workdir):
  return [(r["step"], r.get("loss"), r.get("test_bpd")) for r in metrics.read_metrics(workdir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uninterrupted"))
  loop.train(smoke_config(), wd, progress=False)
  return wd


def test_full_disk_during_a_save_stops_with_one_line_then_resumes(reference, tmp_path,
                                                                  monkeypatch):
  wd = str(tmp_path / "wd")
  original = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def no_space_from_step_15(self, x, directory):
    if os.path.basename(os.path.dirname(str(directory))).split(".")[0] in ("15", "16", "20"):
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await original(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn",
                      no_space_from_step_15)
  with pytest.raises(ckpt_lib.DiskFull) as e:
    loop.train(smoke_config(), wd, progress=False)
  msg = str(e.value)
  assert msg.startswith("disk full") and "\n" not in msg, msg
  assert os.path.join(wd, "checkpoints", "15") in msg and "(5, 10) are intact" in msg
  assert os.path.getsize(os.path.join(wd, lock_lib.LOCK_NAME)) == 0  # released
  listed = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  assert listed[:2] == ["10", "15.orbax-checkpoint-tmp"] and "5" in listed
  monkeypatch.undo()
  _settle(os.path.join(wd, "checkpoints", "15.orbax-checkpoint-tmp"))
  # Space again: resumes from 10 (the unfinished 15 is removed, never restored).
  assert loop.train(smoke_config(), wd, progress=False)["step"] == 30
  assert not any("tmp" in n for n in os.listdir(os.path.join(wd, "checkpoints")))
  assert _rows(wd) == _rows(reference)


def _settle(directory, quiet_s=0.5, limit_s=20.0):
  """Waits until no file under ``directory`` has changed for ``quiet_s``.

  When one item of an orbax save fails, orbax closes the save's event loop while
  tensorstore still writes the other items' files under the temporary directory; in a
  CLI run the process exits, but in this test process they would land in the resumed
  run's temporary directory of the same step (seen as "Directory not empty").
  """
  def listing():
    out = []
    for d, _, fs in os.walk(directory):
      for f in fs:
        try:
          out.append((os.path.join(d, f), os.stat(os.path.join(d, f)).st_mtime_ns))
        except FileNotFoundError:
          pass
    return sorted(out)

  deadline = time.time() + limit_s
  before = listing()
  while time.time() < deadline:
    time.sleep(quiet_s)
    now = listing()
    if now == before:
      return
    before = now


@pytest.mark.parametrize("where", ["tensorboard", "metrics.jsonl"])
def test_full_disk_in_a_metrics_write_stops_promptly_and_names_the_file(tmp_path, monkeypatch,
                                                                        where):
  """tensorboardX's writer thread died of ENOSPC and the loop then blocked forever on its
  queue; the events are now written in the loop's thread, so the error reaches it."""
  wd = str(tmp_path / "wd")
  calls = [0]
  if where == "tensorboard":
    from tensorboardX import record_writer
    original = record_writer.RecordWriter.write

    def write(self, data):
      calls[0] += 1
      if calls[0] > 40:
        raise OSError(errno.ENOSPC, "No space left on device")
      return original(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
  else:
    original = metrics.MetricWriter.write

    def write(self, step, **scalars):
      calls[0] += 1
      if calls[0] > 4:
        open(self.path, "a").close()  # the file exists; then the write fails
        raise OSError(errno.ENOSPC, "No space left on device", self.path)
      return original(self, step, **scalars)

    monkeypatch.setattr(metrics.MetricWriter, "write", write)
  with pytest.raises(ckpt_lib.DiskFull) as e:
    loop.train(smoke_config(), wd, progress=False)
  msg = str(e.value)
  assert msg.startswith("disk full") and os.path.join(wd, where) in msg, msg
  assert os.path.getsize(os.path.join(wd, lock_lib.LOCK_NAME)) == 0


def _tmpfs_available(tmp_path) -> bool:
  d = tmp_path / "probe"
  d.mkdir()
  if shutil.which("unshare") is None:
    return False
  r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {d}"],
                     capture_output=True, timeout=30)
  return r.returncode == 0


SCRIPT = r"""
set -u
disk=$1; out=$2; shift 2
mount -t tmpfs -o size=2m tmpfs "$disk" || exit 99
"$@" --config.train.num_steps=10 >"$out/leg1.out" 2>"$out/leg1.err"; echo $? >"$out/rc1"
dd if=/dev/zero of="$disk/filler" bs=4k 2>/dev/null
truncate -s -40K "$disk/filler"
"$@" >"$out/leg2.out" 2>"$out/leg2.err"; echo $? >"$out/rc2"
ls "$disk/wd/checkpoints" >"$out/after_full"
rm "$disk/filler"
"$@" >"$out/leg3.out" 2>"$out/leg3.err"; echo $? >"$out/rc3"
cp -r "$disk/wd" "$out/wd"
"""


@pytest.mark.slow  # three CLI runs: about 30 s
def test_real_full_disk_on_a_small_tmpfs(reference, tmp_path):
  if not _tmpfs_available(tmp_path):
    pytest.skip("cannot mount a tmpfs here (unshare -rm not permitted)")
  disk, out = tmp_path / "disk", tmp_path / "out"
  disk.mkdir()
  out.mkdir()
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, "-m", "dgmjax", "train", f"--config={CONFIG}:smoke",
         f"--workdir={disk}/wd"] + [f"--config.train.{k}={v}" for k, v in TRAIN.items()]
  subprocess.run(["unshare", "-rm", "sh", "-c", SCRIPT, "sh", str(disk), str(out), *cmd],
                 env=env, timeout=400, check=True)

  def read(name):
    with open(out / name) as f:
      return f.read()

  assert read("rc1").strip() == "0", read("leg1.err")[-2000:]
  assert read("rc2").strip() == "1", read("leg2.err")[-3000:]
  err = read("leg2.err")
  lines = [ln for ln in err.splitlines() if ln.startswith("dgmjax")]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert lines[0].startswith("dgmjax: error: disk full") and f"{disk}/wd" in lines[0]
  assert {"5", "10"} <= set(read("after_full").split())
  assert read("rc3").strip() == "0", read("leg3.err")[-2000:]
  assert _rows(str(out / "wd")) == _rows(reference)
