"""``dgmjax train``: trains a config in a workdir, or resumes the workdir."""

from __future__ import annotations

from dgmjax.commands.workdirs import config_for, print_json


def run_train(fl) -> int:
  """Trains ``--config``, or without it resumes the workdir with the config it stores."""
  from dgmjax.train import config as config_lib
  from dgmjax.train import loop
  config = config_for(fl, "last")
  config_lib.validate(config)
  print_json(loop.train(config, fl.workdir))
  return 0
