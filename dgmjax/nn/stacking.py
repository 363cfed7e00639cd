"""Stacking identical parameter subtrees along a new leading axis, and back: the layout
conversions of the scanned models (Glow's ``stack_steps``, LMConv's ``stack_resnets``,
NVAE's ``stack_groups``) are re-namings around these two functions.

``stack_trees([t_0, ..., t_{n-1}])``: trees of equal structure -> one tree whose leaves
are [n, *shape] (leaf of t_i at index i). ``unstack_tree(t)`` is its inverse (n read from
the leading axis). ``xp`` picks the array module: ``jax.numpy`` (the default; arrays stay
where they are) or ``numpy`` (host arrays, no device dispatch per leaf).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp


def stack_trees(trees: Sequence[Any], xp=jnp):
  """[n trees of equal structure] -> one tree with leaves [n, *shape]."""
  if not trees:
    raise ValueError("stack_trees needs at least one tree")
  return jax.tree_util.tree_map(lambda *a: xp.stack([xp.asarray(m) for m in a]), *trees)


def unstack_tree(tree, xp=jnp) -> list:
  """A tree with leaves [n, *shape] -> [n trees], the i-th holding every leaf's slice i."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    return []
  n = leaves[0].shape[0]
  return [jax.tree_util.tree_map(lambda a, i=i: xp.asarray(a)[i], tree) for i in range(n)]
