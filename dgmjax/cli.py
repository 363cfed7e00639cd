"""The dgmjax command line (also ``python -m dgmjax``): train, eval, sample, import,
complete, interpolate, fid, demo, bench, compare.

    dgmjax train  --config experiments/configs/glow_digits.py[:smoke] --workdir runs/x \\
                  [--config.optim.lr=1e-3 ...]
    dgmjax eval   [--config ...] --workdir runs/x [--which best|last] [--iw_samples K]
                  [--orders s_curve:all]
    dgmjax sample [--config ...] --workdir runs/x [--num 64] [--temperature 0.7] [--out DIR]
                  [--order NAME] [--mixture_temperature T] [--logistic_temperature T]
                  [--readjust_bn [--readjust_steps N]]
    dgmjax import --checkpoint FILE --workdir runs/y [--config ...] [--weights ema|model]
    dgmjax complete [--config ...] --workdir runs/x --observed top|bottom|left|right|center|
                  random:P|MASK.png [--order NAME] [--num N]                  (LMConv)
    dgmjax interpolate [--config ...] --workdir runs/x [--num N]         (Glow, NVAE)
    dgmjax manipulate [--config ...] --workdir runs/x --attribute NAME|class:C
                  [--strengths -1,-0.5,0,0.5,1] [--num N]                  (Glow, NVAE)
    dgmjax fid    [--config ...] --workdir runs/x --inception pt_inception-...pth [--num N]
                  [--reference DATASET:SPLIT | STATS.npz] [--temperature T]
    dgmjax demo   [--workdir runs/demo] [--models independent,glow,lmconv,nvae]
    dgmjax bench MODEL [args...]    # delegates to experiments/bench/MODEL.py (a checkout)
    dgmjax compare [args...]        # delegates to experiments/compare/ (a checkout)

    dgmjax CMD --help               # the flags of one command
    --debug                         # show the traceback of an error

Multi-host runs (TPU pods, SLURM/Open MPI GPU clusters, or several processes on one
machine): add ``--distributed`` to train/eval/sample, with ``--coordinator_address
HOST:PORT --num_processes N --process_id I`` where the cluster is not auto-detected.

``--config`` is optional after ``train`` or ``import``: the workdir stores its config.
Configs are ml_collections ConfigDicts loaded from a Python file (``get_config``),
locked, so an override of a key that does not exist is an error. A config file is
Python and runs as code: load only configs you trust.

A user error (a bad flag, a missing file or checkpoint, an invalid setting, a workdir
in use) prints one line ``dgmjax: error: ...`` and exits with status 2; a run that
diverged or filled the disk, one line and status 1. SIGTERM or Ctrl-C (SIGINT) during
``train`` finishes the step in progress, saves it, prints one line naming the saved
step and exits with 128 + the signal's number (143 and 130); rerun to resume.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from typing import Callable

from dgmjax.commands.workdirs import UsageError

EXIT_USAGE = 2
EXIT_FAILED = 1


@dataclasses.dataclass(frozen=True)
class Command:
  """A sub-command with absl flags: ``define(flag_values)`` then ``run(flags) -> int``."""
  help: str
  define: Callable
  run: Callable
  required: tuple = ("config", "workdir")


def _common_flags(fl, argv=None) -> None:
  from absl import flags
  from ml_collections import config_flags

  # sys_argv: the overrides (--config.a.b=...) are found in it (default sys.argv, which is
  # not the command line when main(argv) is called in-process)
  config_flags.DEFINE_config_file(
      "config", None, "path/to/config.py[:variant] (Python, run as code: trusted files only)",
      flag_values=fl, lock_config=True,
      sys_argv=None if argv is None else ["dgmjax"] + list(argv))
  flags.DEFINE_string("workdir", None, "working directory (checkpoints, metrics, samples)",
                      flag_values=fl)
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first "
                    "(multi-host runs)", flag_values=fl)
  flags.DEFINE_string("coordinator_address", None, "with --distributed: HOST:PORT of "
                      "process 0 (default: auto-detected from the cluster)", flag_values=fl)
  flags.DEFINE_integer("num_processes", None, "with --distributed: number of processes",
                       flag_values=fl)
  flags.DEFINE_integer("process_id", None, "with --distributed: this process's index",
                       flag_values=fl)


def _parse(name: str, cmd: Command, argv: list[str]):
  """absl flags of one command; ``None`` after printing help for ``-h/--help``."""
  from absl import flags

  fl = flags.FlagValues()
  _common_flags(fl, argv)
  cmd.define(fl)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
    print(f"usage: dgmjax {name} [--flag=value ...]\n\n{cmd.help}\n")
    print(fl.get_help())
    return None
  try:
    fl(["dgmjax"] + list(argv))
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    raise UsageError(_flag_error(e)) from None
  missing = [n for n in cmd.required if getattr(fl, n) is None]
  if missing:
    raise UsageError(f"missing required flag(s): {', '.join('--' + n for n in missing)} "
                     f"(see dgmjax {name} --help)")
  if not fl.distributed and any(getattr(fl, n) is not None for n in
                                ("coordinator_address", "num_processes", "process_id")):
    raise UsageError("--coordinator_address/--num_processes/--process_id need --distributed")
  return fl


def _flag_error(e: Exception) -> str:
  """One line from a flag-parsing error; ml_collections embeds the config file's whole
  traceback in its message, of which the last line says what went wrong."""
  inner = e
  while inner.args and isinstance(inner.args[0], Exception):
    inner = inner.args[0]
  msg = str(inner.args[0]) if isinstance(inner, KeyError) and inner.args else str(inner)
  if "Traceback (most recent call last)" in msg:
    head = msg.split(":", 1)[0]
    last = [line for line in msg.splitlines() if line.strip()][-1].strip()
    return f"{head}: {last}"
  if isinstance(e, (AttributeError, KeyError)):
    return f"unknown config key: {msg}"
  return msg


def _initialize_distributed(fl) -> None:
  import jax
  # CPU processes exchange collectives over gloo (GPU/TPU use their own transports).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=fl.coordinator_address,
                             num_processes=fl.num_processes, process_id=fl.process_id)


from dgmjax import commands as research  # noqa: E402  (imports nothing heavy at load time)
from dgmjax.commands import manipulate  # noqa: E402  (the same)

COMMANDS: dict[str, Command] = {
    "train": Command("Trains a config in a workdir, resuming from its newest good "
                     "checkpoint (without --config: with the config the workdir stores).",
                     lambda fl: None, research.run_train, required=("workdir",)),
    "eval": Command("Test bits/dim and nats per image of a workdir's best (or last) "
                    "checkpoint.", research.define_eval, research.run_eval,
                    required=("workdir",)),
    "sample": Command("Draws samples from a workdir's best checkpoint (PNG grid + npz).",
                      research.define_sample, research.run_sample,
                      required=("workdir",)),
    "import": Command("Converts an official PyTorch checkpoint into a workdir.",
                      research.define_import, research.run_import,
                      required=("checkpoint", "workdir")),
    "complete": Command("LMConv: completes the hidden region of test images (PNG + "
                        "conditional bits/dim).", research.define_complete,
                        research.run_complete, required=("workdir", "observed")),
    "interpolate": Command("Glow, NVAE: latent interpolations between pairs of test images "
                           "(PNG).", research.define_interpolate,
                           research.run_interpolate, required=("workdir",)),
    "manipulate": Command("Glow, NVAE: moves test images along the latent direction of an "
                          "attribute or class (PNG: one row per image, one column per "
                          "strength).", manipulate.define_manipulate,
                          manipulate.run_manipulate, required=("workdir", "attribute")),
    "fid": Command("Frechet Inception distance of a workdir's samples to a dataset split or "
                   "a pytorch-fid statistics file.", research.define_fid, research.run_fid,
                   required=("workdir", "inception")),
}
DELEGATED = {"demo": "experiments.demo", "compare": "experiments.compare",
             "bench": "experiments.bench.{}"}


# ------------------------------------------------------------ delegated to experiments/

def _checkout_root() -> str | None:
  """The checkout that holds THIS dgmjax (experiments/ beside dgmjax/), by absolute path.

  Never the current directory: a planted ``./experiments`` must not run.
  """
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return here if os.path.isfile(os.path.join(here, "experiments", "__init__.py")) else None


BENCH_HELP = """usage: dgmjax bench {glow,lmconv,nvae,all,compile_depth} [args...]

Benchmarks of dgmjax against the PyTorch baselines (experiments/bench/, a checkout):
  glow | lmconv | nvae   one model's train step, sampling and memory at chosen sizes
  all                    every model at --sizes tiny,paper and --dtypes: JSON + Markdown
  compile_depth          train-step compile time at depth d and 4d
'dgmjax bench MODEL --help' lists a benchmark's flags."""


def _delegate(module: str, argv, prog: str) -> int:
  root = _checkout_root()
  if root is None:
    raise UsageError("this command runs the drivers in experiments/, which ship with the "
                     "source checkout, not the installed package; install dgmjax from a "
                     "clone of the repository (pip install -e .)")
  cwd = os.path.abspath(os.getcwd())
  sys.path[:] = [root] + [p for p in sys.path
                          if os.path.abspath(p or ".") not in (root, cwd)]
  try:
    mod = importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise UsageError(f"{module} is not available in {root} ({e})") from None
  if not os.path.abspath(mod.__file__).startswith(root + os.sep):
    raise UsageError(f"{module} resolved to {mod.__file__}, outside the checkout {root}")
  argv0, sys.argv[0] = sys.argv[0], prog   # argparse's usage line names the full command
  try:
    return int(mod.main(list(argv)) or 0)
  finally:
    sys.argv[0] = argv0


def _run(cmd: str, rest: list[str]) -> int:
  if cmd == "bench":
    if rest and rest[0] in ("-h", "--help", "help"):
      print(BENCH_HELP)
      return 0
    if not rest or rest[0].startswith("-"):
      raise UsageError("bench: name a benchmark first: glow, lmconv, nvae, all or "
                       "compile_depth ('dgmjax bench --help')")
    return _delegate(DELEGATED["bench"].format(rest[0]), rest[1:], f"dgmjax bench {rest[0]}")
  if cmd in DELEGATED:
    return _delegate(DELEGATED[cmd], rest, f"dgmjax {cmd}")
  command = COMMANDS[cmd]
  fl = _parse(cmd, command, rest)
  if fl is None:
    return 0
  if fl.distributed:
    _initialize_distributed(fl)
  return command.run(fl)


def _user_errors() -> tuple:
  from dgmjax.train.lock import WorkdirLocked
  return (ValueError, OSError, WorkdirLocked)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  argv = [a for a in argv if a != "--debug"]
  names = sorted(COMMANDS) + sorted(DELEGATED)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(__doc__)
    return 0 if argv else EXIT_USAGE
  cmd, rest = argv[0], argv[1:]
  if cmd not in names:
    print(f"dgmjax: error: unknown command {cmd!r}; expected one of {', '.join(names)}",
          file=sys.stderr)
    return EXIT_USAGE
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
  logging.getLogger("dgmjax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    return _run(cmd, rest)
  except KeyboardInterrupt:  # Ctrl-C outside training (which saves and stops by itself)
    if debug:
      raise
    print("dgmjax: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    from dgmjax.train.checkpoint import DiskFull
    from dgmjax.train.loop import TrainingDiverged, TrainingInterrupted
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, TrainingInterrupted):
      print(f"dgmjax: {msg}", file=sys.stderr)
      return 128 + e.signum
    if debug or not isinstance(e, _user_errors() + (TrainingDiverged,)):
      raise
    print(f"dgmjax: error: {msg}", file=sys.stderr)
    return EXIT_FAILED if isinstance(e, (TrainingDiverged, DiskFull)) else EXIT_USAGE


if __name__ == "__main__":
  sys.exit(main())
