"""Initialisers and init-time keys shared by the models."""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.numpy as jnp


def torch_uniform(bound: float):
  """PyTorch's default conv/linear init U(-bound, bound), bound = 1/sqrt(fan_in)
  (``kaiming_uniform_(a=sqrt(5))`` for weights, and the same bound for biases)."""
  def init(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, -bound, bound)
  return init


def _mix(x):
  """lowbias32 (C. Wellons, "Prospecting for hash functions", 2018): a 32-bit integer
  hash with full avalanche, uint32 -> uint32, elementwise."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _seed(s):
  s = jnp.asarray(s).astype(jnp.uint32)
  return jnp.stack([_mix(s ^ jnp.uint32(0x9E3779B9)), _mix(s + jnp.uint32(0x85EBCA6B))])


def _fold_in(key, d):
  d = jnp.asarray(d).astype(jnp.uint32)
  return jnp.stack([_mix(key[0] ^ _mix(d)), _mix(key[1] + _mix(d ^ jnp.uint32(0x5BD1E995)))])


def _bits32(key, n: int):
  """n hashed words of the counter 0..n-1 under ``key``: uint32 [n]."""
  return _mix(_mix(jax.lax.iota(jnp.uint32, n) ^ key[0]) + key[1])


def _split(key, shape):
  n = math.prod(shape)
  words = jnp.stack([_bits32(_fold_in(key, 1), n), _bits32(_fold_in(key, 2), n)], -1)
  return words.reshape(tuple(shape) + (2,))


def _random_bits(key, bit_width: int, shape):
  n = math.prod(shape)
  if bit_width == 64:
    hi = _bits32(_fold_in(key, 3), n).astype(jnp.uint64)
    return ((hi << 32) | _bits32(key, n).astype(jnp.uint64)).reshape(shape)
  bits = _bits32(key, n)
  if bit_width < 32:
    bits = (bits >> (32 - bit_width)).astype(jnp.dtype(f"uint{bit_width}"))
  return bits.reshape(shape)


# A counter-based PRNG for initial weights only: each draw is a few dozen integer ops,
# where XLA:CPU expands every rng_bit_generator call ("unsafe_rbg" keys, Philox) into
# ~500 ops and threefry into more (NVAE digits smoke init: 221 draws, 118k HLO lines,
# 14.1 s of compilation with rbg, 20.4 s with threefry, 6.1 s with this hash). Its
# statistical quality (tests/nn/test_nn_init.py) is ample for initial weights; it is not
# meant for sampling or dropout, which keep JAX's default keys.
INIT_PRNG = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="dgmjax_init_hash", tag="dgi")


def fast_init_key(rng: jax.Array) -> jax.Array:
  """A key of ``INIT_PRNG`` seeded (deterministically) by ``rng``, for drawing initial
  weights; XLA compiles it into a few ops per draw (see ``INIT_PRNG``). A key that
  already is not a threefry key is returned as it is."""
  typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
  if typed and jax.random.key_data(rng).shape != (2,):
    return rng
  if typed and jax.random.key_impl(rng) == INIT_PRNG:
    return rng
  if not typed:
    rng = jax.random.wrap_key_data(jnp.asarray(rng, jnp.uint32))
  return jax.random.wrap_key_data(jax.random.bits(rng, (2,), jnp.uint32), impl=INIT_PRNG)
