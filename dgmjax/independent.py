"""The independent baseline: every pixel and channel its own learned categorical.

    p(x) = prod_{h,w,c} Categorical(x_{hwc}; softmax(logits_{hwc}))

It is the best model with no dependence between dimensions; its test bits/dim is the
floor every real model must beat. ``params = {"logits": float32 [H,W,C,num_bins]}``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dgmjax.image_model import ImageModel


@dataclasses.dataclass(frozen=True)
class IndependentModel(ImageModel):
  name: str = dataclasses.field(default="independent", init=False)

  def init(self, rng, x=None, y=None):
    del rng
    self.check_labels(y)
    if x is not None:
      self.check_images(x)
    return {"params": {"logits": jnp.zeros(self.image_shape + (self.num_bins,), jnp.float32)}}

  def _log_probs(self, variables):
    return jax.nn.log_softmax(variables["params"]["logits"], axis=-1)

  def log_prob(self, variables, x, rng=None, y=None):
    """x: uint8 [B,H,W,C] -> [B] log p(x) in nats."""
    del rng
    self.check_labels(y)
    self.check_images(x)
    logp = self._log_probs(variables)
    onehot = jax.nn.one_hot(x, self.num_bins, dtype=logp.dtype)
    return jnp.sum(onehot * logp, axis=(1, 2, 3, 4))

  def loss(self, variables, x, rng=None, train=True, step=None, y=None):
    del train, step
    bpd = jnp.mean(self.bits_per_dim(self.log_prob(variables, x, rng, y=y)))
    return bpd, {"metrics": {"bpd": bpd}, "state": {}}

  def sample(self, variables, rng, num, temperature=1.0, y=None):
    self.check_labels(y)
    num = self.check_num(num)
    self.check_temperatures(temperature=temperature)
    logits = self._log_probs(variables) / temperature
    return jax.random.categorical(rng, logits, shape=(num,) + self.image_shape).astype(jnp.uint8)
