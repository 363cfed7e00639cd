"""stack_trees / unstack_tree: inverse re-layouts of equal-structure parameter trees."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn.stacking import stack_trees, unstack_tree


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_stack_then_unstack_is_identity(xp):
  rs = np.random.RandomState(0)
  trees = [{"a": rs.randn(2, 3).astype(np.float32), "b": {"c": rs.randn(4).astype(np.float32)}}
           for _ in range(3)]
  stacked = stack_trees(trees, xp=xp)
  assert stacked["a"].shape == (3, 2, 3) and stacked["b"]["c"].shape == (3, 4)
  assert isinstance(stacked["a"], np.ndarray) == (xp is np)
  np.testing.assert_array_equal(stacked["b"]["c"][1], trees[1]["b"]["c"])
  back = unstack_tree(stacked, xp=xp)
  assert len(back) == 3
  for got, want in zip(back, trees):
    np.testing.assert_array_equal(got["a"], want["a"])
    np.testing.assert_array_equal(got["b"]["c"], want["b"]["c"])


def test_stack_needs_trees_of_one_structure():
  with pytest.raises(ValueError, match="at least one"):
    stack_trees([])
  with pytest.raises(ValueError):
    stack_trees([{"a": np.zeros(2)}, {"b": np.zeros(2)}])
