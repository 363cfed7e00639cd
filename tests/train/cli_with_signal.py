"""Test driver: the ``dgmjax`` command line, whose process sends itself a signal when it
draws its ``SIGNAL_AT_BATCH``-th training batch (``SIGNAL_NAME``, default SIGTERM).

    SIGNAL_AT_BATCH=3 python tests/train/cli_with_signal.py train --config ... --workdir ...

Used by test_multihost.py to preempt one process of a multi-host run at a known step.
"""

import os
import signal
import sys

from dgmjax import cli, data


def main():
  at = int(os.environ.get("SIGNAL_AT_BATCH", "0"))
  if at:
    sig = getattr(signal, os.environ.get("SIGNAL_NAME", "SIGTERM"))
    original = data.Batches.__next__
    count = [0]

    def next_and_signal(self):
      count[0] += 1
      if count[0] == at:
        os.kill(os.getpid(), sig)
      return original(self)

    data.Batches.__next__ = next_and_signal
  sys.exit(cli.main(sys.argv[1:]))


if __name__ == "__main__":
  main()
