"""The models ``dgmjax compare`` measures, and the helpers every section shares.

- ``RUNS``: each run name in WORKDIR and the config (model, overrides) behind it;
- ``Runs``: loads a run's last checkpoint (``dgmjax.train.loop.restore_for_eval``),
  training it there first when unfinished, and caches it; ``--quick`` takes the smoke
  configs' initial weights instead;
- ``load_test_images`` / ``load_test_labels``: a run's whole test split;
- ``batched``: a function of a batch applied to every row of a split or an array in
  fixed-shape batches, by the one whole-split evaluator (``dgmjax.train.evaluator``,
  which also scores the likelihoods: ``loop.evaluate``, ``evaluator.evaluate_split``).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.train import checkpoint as ckpt_lib
from dgmjax.train import config as config_lib
from dgmjax.train import evaluator
from dgmjax.train import loop
from dgmjax.train import optim as optim_lib
from dgmjax.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
DATASETS = ("digits", "mnist", "cifar10")
MODELS = ("independent", "glow", "lmconv", "nvae")
# what each trained model is called in WORKDIR, and the config (model, overrides) behind it
RUNS = {
    "independent": ("independent", {}),
    "glow": ("glow", {}),
    "lmconv": ("lmconv", {}),
    "lmconv_raster": ("lmconv", {"model.orders": ("raster",)}),
    "nvae": ("nvae", {}),
}


def log(msg: str) -> None:
  print(f"[compare] {msg}", flush=True)


class Runs:
  """Trained models by run name: loads (training first if needed) and caches them."""

  def __init__(self, workdir: str, dataset: str, quick: bool, models=None,
               train_steps: int | None = None):
    self.workdir, self.dataset, self.quick = workdir, dataset, quick
    self.models, self.train_steps = models, train_steps
    self._cache: dict[str, tuple] = {}
    self.info: dict[str, dict] = {}

  def config(self, run: str):
    model, overrides = RUNS[run]
    path = os.path.join(CONFIG_DIR, f"{model}_{self.dataset}.py")
    if not os.path.exists(path):
      return None
    config = config_lib.load_config(path + (":smoke" if self.quick else ""))
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    if self.train_steps and self.train_steps < config.train.num_steps:
      config.train.num_steps = self.train_steps
      for key in ("eval_every", "checkpoint_every"):
        config.train[key] = min(config.train[key], self.train_steps)
    return config

  def available(self, run: str) -> bool:
    if self.models is not None and RUNS[run][0] not in self.models:
      return False
    return self.config(run) is not None

  def get(self, run: str):
    """(experiment, variables) of ``run``; trains it in WORKDIR/run when unfinished."""
    if run in self._cache:
      return self._cache[run]
    config = self.config(run)
    if config is None:
      raise ValueError(f"no config experiments/configs/{RUNS[run][0]}_{self.dataset}.py")
    t0 = time.time()
    if self.quick:  # the smoke configs' initial weights: exercises every code path fast
      exp = loop.build(config)
      tx = optim_lib.make_optimizer(config.optim, config.train.num_steps, 1)
      state = loop.init_state(exp, tx)
      workdir, steps = "(untrained, --quick)", 0
    else:
      workdir = os.path.join(self.workdir, run)
      exp, state = self._train_and_restore(run, config, workdir)
      steps = int(state.step)
    self.info[run] = dict(steps=steps, workdir=workdir,
                          seconds_to_load_or_train=round(time.time() - t0, 1),
                          params=num_params(state))
    self._cache[run] = (exp, state.variables(ema=True))
    return self._cache[run]

  def _train_and_restore(self, run: str, config, workdir: str):
    """Trains ``run`` in ``workdir`` up to the config's num_steps (resuming), then
    restores its LAST checkpoint: (experiment, state)."""
    ck = ckpt_lib.Checkpointer(workdir)
    done = ck.latest_step()
    ck.close()
    if done is None or done < config.train.num_steps:
      log(f"training {run} ({config.train.num_steps} steps, from step {done or 0}) in "
          f"{workdir}")
      loop.train(config, workdir, progress=False)
    try:
      return loop.restore_for_eval(config, workdir, "last")
    except Exception as e:  # a workdir written by another config: say which, do not guess
      raise RuntimeError(f"could not restore {run} from {workdir} with the config "
                         f"{RUNS[run][0]}_{self.dataset}.py{':smoke' if self.quick else ''} "
                         f"(a run with another config? use another --workdir): {e}") from e


def num_params(state) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(state.variables()["params"])))


def load_test_images(exp) -> np.ndarray:
  return np.asarray(exp.test_data.get(np.arange(len(exp.test_data))))


def load_test_labels(exp):
  try:
    return exp.test_data.labels(np.arange(len(exp.test_data)))
  except Exception:  # datasets without labels
    return None


class _Rows:
  """An array as a dataset (``len``, ``get``) for ``dgmjax.data.eval_batches``."""

  def __init__(self, x):
    self.x = np.asarray(x)

  def __len__(self) -> int:
    return len(self.x)

  def get(self, indices) -> np.ndarray:
    return self.x[indices]


def batched(fn, x, batch: int, dtype=None) -> np.ndarray:
  """fn(x_batch) -> array with leading dim b, for every row of ``x`` (an array, or a
  dataset with ``len`` and ``get`` such as ``exp.test_data``), in fixed-shape batches whose
  padding rows are dropped (``evaluator.map_split`` on one process); the result is cast to
  ``dtype`` when given."""
  ds = x if hasattr(x, "get") else _Rows(x)
  step = lambda _, b, __: fn(jnp.asarray(state_lib.split_batch(b)[0]))
  return np.concatenate([np.asarray(out, dtype)
                         for out in evaluator.map_split(step, None, ds, batch_size=batch)])
