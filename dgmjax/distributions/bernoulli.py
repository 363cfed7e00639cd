"""Bernoulli and categorical distributions over discrete levels, parameterised by logits.

    Bernoulli:    log p(x) = x log sigmoid(l) + (1 - x) log sigmoid(-l),   x in {0, 1}
    Categorical:  log p(x) = log_softmax(l)[x],                            x in {0..K-1}

LMConv's binarised-MNIST head is the K = 2 categorical (a two-way softmax); a Bernoulli
with logit ``l1 - l0`` is the same distribution. Sampling with temperature ``T`` uses
the logits ``l / T``; ``T = 0`` is the mode (argmax; for a Bernoulli ``l > 0``).
Log-probabilities are float32 (float64 for float64 logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _compute_dtype(logits):
  return jnp.promote_types(jnp.float32, jnp.result_type(logits))


def _check_int(x, k, name, who):
  shape = getattr(x, "shape", None)
  if shape is None:
    raise ValueError(f"{who}: {name} must be an integer array; got {type(x).__name__}")
  dtype = np.dtype(x.dtype)
  if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
    raise ValueError(f"{who}: {name} must hold integers in [0, {k}); got dtype {dtype}")
  if not isinstance(x, jax.core.Tracer) and x.size:
    lo, hi = int(np.min(np.asarray(x))), int(np.max(np.asarray(x)))
    if lo < 0 or hi >= k:
      raise ValueError(f"{who}: {name} values must lie in [0, {k - 1}]; got min {lo}, max {hi}")


def _check_float(logits, who):
  if getattr(logits, "shape", None) is None or not jnp.issubdtype(jnp.result_type(logits),
                                                                 jnp.floating):
    raise ValueError(f"{who}: logits must be a floating-point array; got {logits!r:.80}")


def _check_temperature(t, who):
  if not isinstance(t, jax.core.Tracer) and not float(np.min(np.asarray(t))) >= 0.0:
    raise ValueError(f"{who}: temperature must be >= 0; got {t!r}")


def _check_out_dtype(dtype, k, who):
  if not jnp.issubdtype(dtype, jnp.integer) or jnp.iinfo(dtype).max < k - 1:
    raise ValueError(f"{who}: dtype must be an integer type holding {k - 1}; got {dtype}")


def bernoulli_log_prob(x, logits):
  """x: int/bool [...] in {0, 1}; logits: float [...] (same shape) -> float32 [...] nats."""
  who = "bernoulli_log_prob"
  _check_float(logits, who)
  _check_int(x, 2, "x", who)
  if tuple(x.shape) != tuple(logits.shape):
    raise ValueError(f"{who}: x and logits must have the same shape; got {tuple(x.shape)} "
                     f"and {tuple(logits.shape)}")
  logits = logits.astype(_compute_dtype(logits))
  return jnp.where(x.astype(bool), jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))


def bernoulli_sample(rng, logits, temperature=1.0, *, dtype=jnp.uint8):
  """x ~ Bernoulli(sigmoid(logits / T)): ``dtype`` (uint8) [...] in {0, 1}.

  Drawn as ``1[logits + T L > 0]`` with L standard logistic, so ``T = 0`` gives the mode.
  """
  who = "bernoulli_sample"
  _check_float(logits, who)
  _check_temperature(temperature, who)
  _check_out_dtype(dtype, 2, who)
  logits = logits.astype(_compute_dtype(logits))
  noise = jax.random.logistic(rng, logits.shape, logits.dtype)
  return (logits + temperature * noise > 0).astype(dtype)


def categorical_log_prob(x, logits):
  """x: int [...] in {0..K-1}; logits: float [..., K] -> float32 [...] nats."""
  who = "categorical_log_prob"
  _check_float(logits, who)
  if logits.ndim < 1 or logits.shape[-1] < 1:
    raise ValueError(f"{who}: logits must have shape [..., K] with K >= 1; got {logits.shape}")
  _check_int(x, logits.shape[-1], "x", who)
  if tuple(x.shape) != tuple(logits.shape[:-1]):
    raise ValueError(f"{who}: x must have shape {tuple(logits.shape[:-1])} (logits without K); "
                     f"got {tuple(x.shape)}")
  log_p = jax.nn.log_softmax(logits.astype(_compute_dtype(logits)), axis=-1)
  return jnp.take_along_axis(log_p, x.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def categorical_sample(rng, logits, temperature=1.0, *, dtype=jnp.uint8):
  """x ~ Categorical(softmax(logits / T)): ``dtype`` (uint8) [...] for logits [..., K].

  Gumbel-max computed as ``argmax(logits + T g)``, so ``T = 0`` gives the argmax.
  """
  who = "categorical_sample"
  _check_float(logits, who)
  if logits.ndim < 1 or logits.shape[-1] < 1:
    raise ValueError(f"{who}: logits must have shape [..., K] with K >= 1; got {logits.shape}")
  _check_temperature(temperature, who)
  _check_out_dtype(dtype, logits.shape[-1], who)
  logits = logits.astype(_compute_dtype(logits))
  gumbel = jax.random.gumbel(rng, logits.shape, logits.dtype)
  return jnp.argmax(logits + temperature * gumbel, axis=-1).astype(dtype)
