"""The independent baseline: every pixel and channel its own learned categorical.

    p(x) = prod_{h,w,c} Categorical(x_{hwc}; softmax(logits_{hwc}))

It is the best model with no dependence between dimensions; its test bits/dim is the
floor every real model must beat. ``params = {"logits": float32 [H,W,C,num_bins]}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dgmjax import images


@dataclasses.dataclass(frozen=True)
class IndependentModel:
  image_shape: tuple[int, int, int]
  num_bins: int = 256
  name: str = dataclasses.field(default="independent", init=False)

  def __post_init__(self):
    object.__setattr__(self, "image_shape", images.check_image_shape(self.image_shape))
    object.__setattr__(self, "num_bins", images.check_num_bins(self.num_bins))

  def init(self, rng, x=None):
    del rng
    if x is not None:
      images.check_images(x, self.image_shape, self.num_bins)
    return {"params": {"logits": jnp.zeros(self.image_shape + (self.num_bins,), jnp.float32)}}

  def _log_probs(self, variables):
    return jax.nn.log_softmax(variables["params"]["logits"], axis=-1)

  def log_prob(self, variables, x, rng=None):
    """x: uint8 [B,H,W,C] -> [B] log p(x) in nats."""
    del rng
    images.check_images(x, self.image_shape, self.num_bins)
    logp = self._log_probs(variables)
    onehot = jax.nn.one_hot(x, self.num_bins, dtype=logp.dtype)
    return jnp.sum(onehot * logp, axis=(1, 2, 3, 4))

  def loss(self, variables, x, rng=None, train=True, step=None):
    del train, step
    bpd = jnp.mean(images.bits_per_dim(self.log_prob(variables, x, rng), self.image_shape))
    return bpd, {"metrics": {"bpd": bpd}, "state": {}}

  def sample(self, variables, rng, num, temperature=1.0):
    logits = self._log_probs(variables) / temperature
    return jax.random.categorical(rng, logits, shape=(num,) + self.image_shape).astype(jnp.uint8)
