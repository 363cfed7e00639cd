"""Small test-only models for the training-loop tests."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dgmjax.independent import IndependentModel


@dataclasses.dataclass(frozen=True)
class NaNAtSteps(IndependentModel):
  """The independent model whose loss is NaN at the given (0-based) optimiser steps."""
  nan_steps: tuple = ()

  def loss(self, variables, x, rng=None, train=True, step=None, y=None):
    loss, aux = super().loss(variables, x, rng, train, step, y=y)
    bad = jnp.zeros([], bool)
    for s in self.nan_steps:
      bad = bad | (step == s)
    return jnp.where(bad, jnp.nan, loss), aux
