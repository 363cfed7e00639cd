"""``dgmjax train|eval|sample|demo|bench|compare`` (also ``python -m dgmjax``).

    dgmjax train  --config experiments/configs/glow_digits.py[:smoke] --workdir runs/x \
                  [--config.optim.lr=1e-3 ...]
    dgmjax eval   --config ... --workdir runs/x [--which best|last]
    dgmjax sample --config ... --workdir runs/x [--num 64] [--temperature 0.7] [--out DIR]
    dgmjax demo   [--workdir runs/demo] [--models independent,glow,lmconv,nvae]
    dgmjax bench MODEL [args...]    # delegates to experiments/bench/MODEL.py (a checkout)
    dgmjax compare [args...]        # delegates to experiments/compare.py (a checkout)

Configs are ml_collections ConfigDicts loaded from a Python file (``get_config``),
locked, so an override of a key that does not exist is an error.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys

COMMANDS = ("train", "eval", "sample", "demo", "bench", "compare")


def _usage() -> str:
  return __doc__


def _parse_flags(argv, extra):
  """Parses absl flags for one sub-command; returns the FLAGS object."""
  from absl import flags
  from ml_collections import config_flags

  fl = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "path/to/config.py[:variant]",
                                  flag_values=fl, lock_config=True)
  flags.DEFINE_string("workdir", None, "working directory (checkpoints, metrics, samples)",
                      flag_values=fl)
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (multi-host "
                    "runs: TPU pods, SLURM/Open MPI GPU clusters)", flag_values=fl)
  for define in extra:
    define(fl)
  try:
    fl(["dgmjax"] + list(argv))
  except flags.Error as e:
    raise SystemExit(f"dgmjax: {e}")
  if fl.distributed:
    import jax
    jax.distributed.initialize()
  return fl


def _require(fl, *names):
  missing = [n for n in names if getattr(fl, n) is None]
  if missing:
    raise SystemExit(f"dgmjax: missing required flag(s): {', '.join('--' + n for n in missing)}")


def _checkout_root() -> str | None:
  """The repository root when running from a checkout (experiments/ beside dgmjax/)."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for root in (os.getcwd(), here):
    if os.path.isdir(os.path.join(root, "experiments")):
      return root
  return None


def _delegate(module: str, argv) -> int:
  root = _checkout_root()
  if root is None:
    raise SystemExit("dgmjax: this command runs the drivers in experiments/, which ship with "
                     "the source checkout, not the installed package; run it from a clone of "
                     "the repository")
  if root not in sys.path:
    sys.path.insert(0, root)
  try:
    mod = importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise SystemExit(f"dgmjax: {module} is not available in this checkout ({e})")
  return int(mod.main(list(argv)) or 0)


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0 if argv else 2
  cmd, rest = argv[0], argv[1:]
  if cmd not in COMMANDS:
    print(f"dgmjax: unknown command {cmd!r}; expected one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
  logging.getLogger("dgmjax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.WARNING)
  if cmd == "bench":
    if not rest:
      raise SystemExit("dgmjax bench: name a model: glow, lmconv or nvae")
    return _delegate(f"experiments.bench.{rest[0]}", rest[1:])
  if cmd == "compare":
    return _delegate("experiments.compare", rest)
  if cmd == "demo":
    return _delegate("experiments.demo", rest)

  from absl import flags
  if cmd == "train":
    fl = _parse_flags(rest, [])
    _require(fl, "config", "workdir")
    from dgmjax.train import loop
    summary = loop.train(fl.config, fl.workdir)
    print(json.dumps(summary))
    return 0

  if cmd == "eval":
    fl = _parse_flags(rest, [lambda f: flags.DEFINE_enum(
        "which", "best", ["best", "last"], "checkpoint to evaluate", flag_values=f)])
    _require(fl, "config", "workdir")
    from dgmjax.train import loop
    exp, state = loop.restore_for_eval(fl.config, fl.workdir, fl.which)
    bpd = loop.evaluate(exp, state.variables(ema=True))
    print(json.dumps({"step": int(state.step), "test_bpd": bpd, "checkpoint": fl.which}))
    return 0

  # sample
  fl = _parse_flags(rest, [
      lambda f: flags.DEFINE_integer("num", 64, "number of samples", flag_values=f),
      lambda f: flags.DEFINE_float("temperature", None, "sampling temperature (models "
                                   "that take one)", flag_values=f),
      lambda f: flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=f),
      lambda f: flags.DEFINE_string("out", None, "output directory (default WORKDIR/samples)",
                                    flag_values=f)])
  _require(fl, "config", "workdir")
  import jax
  from dgmjax import imageio
  from dgmjax.train import loop
  exp, state = loop.restore_for_eval(fl.config, fl.workdir)
  kwargs = {} if fl.temperature is None else {"temperature": fl.temperature}
  x = loop.draw_samples(exp, state.variables(ema=True), fl.num, jax.random.key(fl.seed),
                        **kwargs)
  out = fl.out or os.path.join(fl.workdir, "samples")
  png = imageio.save_grid(os.path.join(out, "samples.png"), x, exp.num_bins)
  npz = imageio.save_npz(os.path.join(out, "samples.npz"), x, exp.num_bins)
  print(json.dumps({"png": png, "npz": npz, "num": int(x.shape[0])}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
