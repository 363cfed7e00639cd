"""Test driver: train a config, SIGKILL-ing this process when batch ``KILL_AT`` is drawn.

    python tests/train/run_and_kill.py CONFIG WORKDIR KILL_AT [override=value ...]

KILL_AT = 0 never kills. Used by test_loop.py to simulate a crash mid-training.
"""

import os
import signal
import sys

from dgmjax import data
from dgmjax.train import config as config_lib
from dgmjax.train import loop


def main():
  spec, workdir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
  config = config_lib.load_config(spec)
  for item in sys.argv[4:]:
    key, value = item.split("=")
    section, name = key.split(".")
    config[section][name] = type(config[section][name])(value)
  if kill_at:
    original = data.Batches.__next__
    count = [0]

    def next_or_die(self):
      count[0] += 1
      if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      return original(self)

    data.Batches.__next__ = next_or_die
  loop.train(config, workdir, progress=False)


if __name__ == "__main__":
  main()
