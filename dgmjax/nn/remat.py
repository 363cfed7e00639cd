"""Rematerialisation (gradient checkpointing) of a repeated block, with a selectable policy.

``remat`` values every model accepts (config key ``model.remat``):

- ``False`` / ``"none"``: store the block's activations for the backward pass (fastest,
  most memory);
- ``True`` / ``"full"``: store only the block's inputs and recompute everything inside it
  in the backward pass (``jax.checkpoint`` with its default policy: one extra forward of
  the block, the least memory);
- the name of a ``jax.checkpoint_policies`` policy that takes no argument, e.g.
  ``"dots_with_no_batch_dims_saveable"`` (keep the results of matmuls/convolutions
  without batch dimensions, recompute the cheap elementwise ops between them) or
  ``"dots_saveable"``: between the two extremes
  (https://docs.jax.dev/en/latest/gradient-checkpointing.html).
"""

from __future__ import annotations

import flax.linen as nn
import jax

POLICIES = ("dots_saveable", "dots_with_no_batch_dims_saveable", "checkpoint_dots",
            "checkpoint_dots_with_no_batch_dims", "nothing_saveable", "everything_saveable")
CHOICES = (False, True, "none", "full") + POLICIES


def check_remat(value, model: str):
  """``value`` normalised: False, True or a policy name; ValueError naming the choices."""
  if isinstance(value, bool):
    return value
  if isinstance(value, str) and value in CHOICES:
    return {"none": False, "full": True}.get(value, value)
  raise ValueError(f"{model}: remat must be one of {list(CHOICES)} (a jax.checkpoint_policies "
                   f"name selects what is saved); got {value!r}")


def remat_module(cls, remat, static_argnums=()):
  """``cls`` itself (remat False), or ``nn.remat(cls)`` with the policy ``remat`` names."""
  remat = check_remat(remat, cls.__name__)
  if remat is False:
    return cls
  policy = None if remat is True else getattr(jax.checkpoint_policies, remat)
  return nn.remat(cls, static_argnums=static_argnums, policy=policy)
