"""The optimiser built from ``config.optim`` (optax only).

    schedule(t) = lr * t / warmup                              t < warmup
                = lr * s(t - warmup)                           otherwise,
    s = 1 (constant) | cosine decay to end_lr_factor | decay_rate ** (t / decay_steps)

The chain is: global-norm clipping (optional) -> adam/adamax/adamw with the schedule
and weight decay -> gradient accumulation over ``grad_accum`` micro-steps
(``optax.MultiSteps``). Polyak/EMA parameters are kept by the train state, not here.
"""

from __future__ import annotations

import optax

_OPTIMISERS = ("adam", "adamax", "adamw")
_SCHEDULES = ("constant", "cosine", "exponential")


def learning_rate_schedule(optim, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to ``optim.lr`` then the configured decay."""
  if optim.schedule not in _SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {_SCHEDULES}; got {optim.schedule!r}")
  warmup = int(optim.warmup_steps)
  decay_steps = int(optim.decay_steps) or max(1, int(num_steps) - warmup)
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.lr)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(optim.lr, decay_steps, alpha=optim.end_lr_factor)
  else:
    after = optax.exponential_decay(optim.lr, decay_steps, optim.decay_rate)
  if warmup <= 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.lr, warmup), after], boundaries=[warmup])


def make_optimizer(optim, num_steps: int, grad_accum: int = 1) -> optax.GradientTransformation:
  """Builds the optax transformation for ``config.optim``; ValueError on unknown names."""
  if optim.name not in _OPTIMISERS:
    raise ValueError(f"optim.name must be one of {_OPTIMISERS}; got {optim.name!r}")
  lr = learning_rate_schedule(optim, num_steps)
  parts = []
  if optim.clip_norm and optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  if optim.weight_decay and optim.name != "adamw":
    # Coupled L2 decay added to the gradient, as torch.optim.Adam/Adamax(weight_decay=)
    # do (NVAE trains with Adamax(weight_decay=3e-4)).
    parts.append(optax.add_decayed_weights(optim.weight_decay))
  if optim.name == "adamax":
    parts.append(optax.scale_by_adamax(b1=optim.b1, b2=optim.b2, eps=optim.eps))
  else:
    parts.append(optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps))
  if optim.weight_decay and optim.name == "adamw":
    parts.append(optax.add_decayed_weights(optim.weight_decay))  # decoupled (AdamW)
  parts.append(optax.scale_by_learning_rate(lr))
  tx = optax.chain(*parts)
  if grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(grad_accum))
  return tx
