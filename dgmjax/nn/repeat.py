"""The one executor of repeated blocks: a stack of identical blocks whose parameters sit on
a leading [n] axis, run as a scan, partly or fully unrolled, with a remat policy; and the
reversible form for a stack of bijections.

Every model's repeated blocks (Glow's steps of flow per level, LMConv's gated resnets per
stream, NVAE's groups per scale) run through ``repeat``; their parameter trees are
therefore one layout, ``<name>/...`` with leaves [n, *shape], whatever the compute
setting. How they run is ``dgmjax.nn.compute.Compute``:

- ``unroll``: blocks per iteration of the loop (``jax.lax.scan``'s ``unroll``); ``True``
  unrolls completely into straight-line code. Same function, same gradients; compile time
  grows with the unrolled depth, while XLA:CPU often runs straight-line code faster.
- ``remat``: ``jax.checkpoint`` around one block with the named policy
  (``dgmjax.nn.remat``): the backward pass stores only the block's input (and what the
  policy saves) and recomputes the rest.

``repeat(body, length, compute, ...)`` returns a Flax module class (``nn.scan`` of the
remat-ed body), called as ``Stack(*body_fields, name=...)(carry, xs, *broadcast)`` with
the body's ``__call__(carry, x, *broadcast) -> (carry, y)``, or, for a function body
``fn(module, carry, x) -> (carry, y)`` (``nn.scan``'s functional form), a function of
``(module, carry, xs)``.

``repeat(..., unstacked=True)`` runs the same blocks for a caller that applies the stack
inside a loop of its own (LMConv's pixel-by-pixel sampler): XLA:CPU copies a slice of a
stacked array at every iteration of an enclosing loop, even a loop-invariant static slice
(a chain of 6 [576,576] matmuls in a 500-step ``fori_loop``: 0.35 CPU s with separate
arrays, 0.71 as a scan, 1.40 with static slices). So the blocks become submodules
``<name>/<j>/...`` of separate arrays, and the caller slices the stacked variables once,
before its loop, with ``unstack_blocks``; this form exists only inside such a call.

``reversible(step, step_backward, stacked, consts, x)`` runs a stack of bijections with
a backward pass that rebuilds each block's input from its output instead of storing it
(Gomez et al. 2017, "The Reversible Residual Network", algorithm 1): activation memory
O(1) in depth. It is a ``jax.custom_vjp``, so reverse mode only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.nn.compute import Compute
from dgmjax.nn.stacking import stack_trees, unstack_tree


def repeat(body, length: int, compute: Compute, *, reverse: bool = False,
           collections: Sequence[str] = ("params",), rngs: Sequence[str] = ("params",),
           broadcast: int = 0, static_argnums: Sequence[int] = (), unstacked: bool = False):
  """``length`` copies of ``body`` with stacked variables, run as ``compute`` says.

  body: a Module class (or ``functools.partial`` of one) whose ``__call__(carry, x,
  *args)`` returns ``(carry, y)``, or a function ``fn(module, carry, x, *args)``.
  collections: the variable collections stacked on the leading [length] axis (every
  collection the body creates must be listed); rngs: the RNG streams split per block;
  broadcast: the number of trailing arguments ``args`` passed unchanged to every block
  (flags, static objects); static_argnums: positions (as in ``nn.remat``, counting the
  module as 0 for a class body) of arguments that are Python values for remat. xs (and
  the ys returned) carry the [length] axis first; None for none.
  reverse: run the blocks from last to first (the inverse of a flow).
  unstacked: the blocks as submodules ``"0"``..``"n-1"`` with variables of their own
  (``unstack_blocks``; module docstring), in a Python loop; a class body only.
  """
  if isinstance(length, bool) or not isinstance(length, int) or length < 1:
    raise ValueError(f"repeat: length must be an int >= 1; got {length!r}")
  body = compute.checkpoint(body, tuple(static_argnums))
  if unstacked:
    return lambda *fields, name: _Blocks(body, length, fields, reverse, name=name)
  unroll = length if compute.unroll is True else min(compute.unroll, length)
  return nn.scan(body, variable_axes={c: 0 for c in collections},
                 split_rngs={r: True for r in rngs},
                 in_axes=(0,) + (nn.broadcast,) * broadcast, length=length,
                 reverse=reverse, unroll=unroll)


class _Blocks(nn.Module):
  """``repeat(..., unstacked=True)``: block j is the submodule ``str(j)``."""
  body: Any
  length: int
  fields: tuple
  reverse: bool

  @nn.compact
  def __call__(self, carry, xs, *args):
    ys = [None] * self.length
    order = range(self.length - 1, -1, -1) if self.reverse else range(self.length)
    for j in order:
      x = None if xs is None else jax.tree_util.tree_map(lambda a, j=j: a[j], xs)
      carry, ys[j] = self.body(*self.fields, name=str(j))(carry, x, *args)
    return carry, (None if ys[0] is None else stack_trees(ys))


def unstack_blocks(tree: Any, name: str) -> Any:
  """Every subtree ``name`` of ``tree`` (stacked by ``repeat``: leaves [n, ...]) as
  ``repeat(..., unstacked=True)`` reads it, ``name/<j>/...`` holding slice j."""
  if not isinstance(tree, Mapping):
    return tree
  return {k: ({str(j): t for j, t in enumerate(unstack_tree(v))} if k == name
              else unstack_blocks(v, name)) for k, v in tree.items()}


def reversible(step: Callable, step_backward: Callable, stacked: Any, consts: Any, xs: Any,
               x: jax.Array):
  """(y, log_det[B]) of a stack of bijections, with a reversible gradient.

  step(p, c, x_k, h) -> (h', log_det[B]): one block's forward, a bijection of h for the
  block's parameters p, constants c and per-block input x_k (each leaf of ``stacked``,
  ``consts`` and ``xs`` is indexed on its leading [n] axis; ``xs`` may be None).
  step_backward(p, c, x_k, y, gy, gld) -> (h, gh, gp): the block's input h rebuilt from
  its output y, with dL/dh and dL/dp from dL/dy and dL/dlog_det (the log-dets of the
  blocks add up, so gld is the same for every block).
  Differentiable in ``stacked`` and ``x`` (reverse mode: ``jax.grad``/``jax.vjp``);
  ``consts`` and ``xs`` get zero / no cotangents.
  """

  def forward(stacked, consts, x):
    def body(carry, inputs):
      h, log_det = carry
      p, c, xk = inputs
      h, ld = step(p, c, xk, h)
      return (h, log_det + ld.astype(log_det.dtype)), None
    log_det = jnp.zeros((x.shape[0],), jnp.promote_types(x.dtype, jnp.float32))
    return jax.lax.scan(body, (x, log_det), (stacked, consts, xs))[0]

  @jax.custom_vjp
  def run(stacked, consts, x):
    return forward(stacked, consts, x)

  def fwd(stacked, consts, x):
    y, log_det = forward(stacked, consts, x)
    return (y, log_det), (stacked, consts, y)

  def bwd(res, g):
    stacked, consts, y = res
    gy, gld = g

    def body(carry, inputs):
      h, gh = carry
      p, c, xk = inputs
      h, gh, gp = step_backward(p, c, xk, h, gh, gld)
      return (h, gh), gp
    (_, gx), g_stacked = jax.lax.scan(body, (y, gy), (stacked, consts, xs), reverse=True)
    return g_stacked, jax.tree_util.tree_map(jnp.zeros_like, consts), gx

  run.defvjp(fwd, bwd)
  return run(stacked, consts, x)
