"""The training state and the jitted, data-parallel train and eval steps.

The step is generic: it only calls ``model.loss`` and ``model.log_prob`` of the model
protocol (``dgmjax.models``). Parameters are replicated and the batch is sharded over
a 1-D device mesh with axis ``"data"``; XLA inserts the gradient all-reduce (GSPMD),
so the same program runs on 1 device, 4 forced CPU devices or a multi-host pod.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position.

  step: int32 []             optimiser steps taken (skipped ones included)
  params: pytree             trainable parameters
  opt_state: pytree          optax state
  ema_params: pytree         Polyak average of params (== params when EMA is off)
  model_state: dict          non-trainable collections (batch_stats, spectral vectors...)
  nonfinite: int32 []        consecutive skipped (non-finite) updates
  skipped: int32 []          total skipped updates
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  model_state: Any
  nonfinite: jax.Array
  skipped: jax.Array

  def variables(self, ema: bool = False) -> dict:
    return {"params": self.ema_params if ema else self.params, **self.model_state}


def create_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(
      step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.array, params), model_state=variables,
      nonfinite=jnp.zeros([], jnp.int32), skipped=jnp.zeros([], jnp.int32))


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device (all hosts), axis name ``"data"``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def shard_batch(x_local: np.ndarray, mesh: Mesh) -> jax.Array:
  """This host's slice [b_local,...] -> a global array sharded over ``"data"``."""
  n = mesh.devices.size
  global_batch = x_local.shape[0] * jax.process_count()
  if global_batch % n:
    raise ValueError(f"global batch size {global_batch} must be divisible by the "
                     f"number of devices {n}")
  return jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), x_local)


def shard_batches(batch: dict, mesh: Mesh) -> dict:
  """``shard_batch`` on every array of a batch dict ``{"image", ["label"]}``."""
  return jax.tree.map(lambda a: shard_batch(a, mesh), batch)


def split_batch(batch: dict):
  """``{"image": x[, "label": y]}`` -> ``(x, {} or {"y": y})``: the model's arguments
  (class-conditional models take labels as ``y=``)."""
  if not isinstance(batch, dict) or "image" not in batch:
    raise ValueError("a batch must be a dict {'image': uint8 [B,H,W,C], optional 'label': "
                     f"int [B]}}; got {type(batch).__name__}")
  unknown = set(batch) - {"image", "label"}
  if unknown:
    raise ValueError(f"unknown batch keys {sorted(unknown)}; expected 'image' and 'label'")
  return batch["image"], ({"y": batch["label"]} if "label" in batch else {})


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(l).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(model, tx: optax.GradientTransformation, *, ema_decay: float,
                    mesh: Mesh, preprocess: Callable | None = None):
  """Returns ``step(state, batch, rng) -> (state, metrics)``, jitted once, state donated.

  ``batch`` is ``{"image": uint8 [B,H,W,C]}`` plus ``"label"``: int [B] for
  class-conditional models (which have ``num_classes``), passed to the model as ``y=``.

  ``rng`` is the run's base key; the step's key is ``fold_in(rng, state.step)`` so a
  resumed run draws the same noise. A step whose loss, gradients, new parameters, new
  optimiser state or new model state hold a NaN/inf (e.g. a NaN learning rate, or an
  update that overflows) leaves params, optimiser state and model state unchanged and
  counts the step as skipped: the state is finite after every step.
  ``preprocess(rng, x) -> x`` (e.g. dynamic binarisation) runs inside the step.
  """
  replicated = NamedSharding(mesh, P())

  def step(state: TrainState, batch, rng):
    x, labels = split_batch(batch)
    rng = jax.random.fold_in(rng, state.step)
    data_rng, model_rng = jax.random.split(rng)
    if preprocess is not None:
      x = preprocess(data_rng, x)

    def loss_fn(params):
      loss, aux = model.loss({"params": params, **state.model_state}, x, model_rng,
                             train=True, step=state.step, **labels)
      return loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_model_state = {**state.model_state, **aux.get("state", {})}
    finite = (jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
              & _all_finite(opt_state) & _all_finite(new_model_state))

    # One cond, not a jnp.where per leaf: on XLA:CPU the per-leaf select combined with
    # this all-leaves reduction made the NVAE smoke step compile for over 10 minutes at
    # 16 GB (either alone: 18-28 s; the cond: 22 s). Why XLA blows up was not diagnosed.
    params, opt_state, model_state = jax.lax.cond(
        finite, lambda: (params, opt_state, new_model_state),
        lambda: (state.params, state.opt_state, state.model_state))
    if ema_decay > 0:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                         state.ema_params, params)
    else:
      ema = params
    new_state = TrainState(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
        model_state=model_state, nonfinite=jnp.where(finite, 0, state.nonfinite + 1),
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "skipped": (~finite).astype(jnp.int32), **aux.get("metrics", {})}
    return new_state, metrics

  return jax.jit(step, donate_argnums=(0,), out_shardings=(replicated, replicated))


def make_batch_step(fn: Callable, *, mesh: Mesh, preprocess: Callable | None = None):
  """Returns ``step(variables, batch, rng) -> fn(variables, x, rng, **labels)`` (jitted, the
  output replicated over ``mesh``): ``batch`` is a dict as for the train step, its images
  preprocessed with ``preprocess(fold_in(rng, 1), x)`` as in training."""

  def step(variables, batch, rng):
    x, labels = split_batch(batch)
    if preprocess is not None:
      x = preprocess(jax.random.fold_in(rng, 1), x)
    return fn(variables, x, rng, **labels)

  return jax.jit(step, out_shardings=NamedSharding(mesh, P()))


def make_eval_step(model, *, mesh: Mesh, preprocess: Callable | None = None):
  """Returns ``eval(variables, batch, rng) -> [B] log p(x) in nats`` (jitted); ``batch``
  is a dict as for the train step."""
  return make_batch_step(model.log_prob, mesh=mesh, preprocess=preprocess)
