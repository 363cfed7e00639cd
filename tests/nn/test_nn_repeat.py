"""The executor of repeated blocks (``dgmjax.nn.repeat``) on a toy bijection: a scan, a
partly and a fully unrolled scan, a Python loop over the unstacked blocks (by hand and
as ``repeat(..., unstacked=True)``) and the reversible form compute one function with one
gradient; remat reaches the body; the parameter tree does not grow with depth."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn.compute import Compute
from dgmjax.nn.repeat import repeat, reversible, unstack_blocks


class Affine(nn.Module):
  """h -> h * exp(tanh(a)) + b * tanh(h @ w): an invertible toy block with log_det [B]
  (an additive coupling on the second half, a diagonal scale on the whole)."""

  @nn.compact
  def __call__(self, carry, x):
    h, log_det = carry
    c = h.shape[-1]
    a = self.param("a", nn.initializers.normal(0.5), (c,))
    w = self.param("w", nn.initializers.normal(0.5), (c // 2, c // 2))
    h = h * jnp.exp(jnp.tanh(a)) + x
    h = jnp.concatenate([h[:, :c // 2], h[:, c // 2:] + jnp.tanh(h[:, :c // 2] @ w)], -1)
    return (h, log_det + jnp.sum(jnp.tanh(a))), None


def step(p, c, xk, h):
  (h, ld), _ = Affine().apply({"params": p}, (h, jnp.zeros(h.shape[:1])), xk)
  return h, ld


def step_backward(p, c, xk, y, gy, gld):
  half = y.shape[-1] // 2
  s = jnp.exp(jnp.tanh(p["a"]))
  u = jnp.concatenate([y[:, :half], y[:, half:] - jnp.tanh(y[:, :half] @ p["w"])], -1)
  h = (u - xk) / s
  _, vjp = jax.vjp(lambda q, hh: step(q, c, xk, hh), p, h)
  gp, gh = vjp((gy, gld))
  return h, gh, gp


N, B, C = 5, 3, 4


def _setup():
  h = jax.random.normal(jax.random.PRNGKey(0), (B, C))
  xs = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (N, B, C))
  stack = repeat(Affine, N, Compute())
  variables = stack(name="blocks").init(jax.random.PRNGKey(2), (h, jnp.zeros(B)), xs)
  return h, xs, variables


def _loss_fn(kind):
  def loss(params, h, xs):
    if kind == "loop":
      carry = (h, jnp.zeros(B))
      for k in range(N):
        p = jax.tree_util.tree_map(lambda a, k=k: a[k], params)
        carry, _ = Affine().apply({"params": p}, carry, xs[k])
    elif kind == "reversible":
      carry = reversible(step, step_backward, params, {}, xs, h)
    elif kind == "unstacked":    # the form for callers with a loop of their own
      stack = repeat(Affine, N, Compute(), unstacked=True)
      blocks = unstack_blocks({"blocks": params}, "blocks")["blocks"]
      assert sorted(blocks) == [str(k) for k in range(N)]
      carry, _ = stack(name="blocks").apply({"params": blocks}, (h, jnp.zeros(B)), xs)
    else:
      unroll = {"scan": 1, "unroll2": 2, "unroll": True}[kind]
      stack = repeat(Affine, N, Compute(unroll=unroll))
      carry, _ = stack(name="blocks").apply({"params": params}, (h, jnp.zeros(B)), xs)
    y, log_det = carry
    return jnp.sum(jnp.sin(y)) + jnp.sum(log_det ** 2)
  return loss


def test_layout_is_one_stacked_tree_whose_size_does_not_grow_with_depth():
  _, _, variables = _setup()
  shapes = jax.tree_util.tree_map(jnp.shape, variables["params"])
  assert shapes == {"a": (N, C), "w": (N, C // 2, C // 2)}


@pytest.mark.parametrize("kind", ["unroll2", "unroll", "loop", "unstacked", "reversible"])
def test_every_execution_is_the_same_function_and_gradient(kind):
  h, xs, variables = _setup()
  params = variables["params"]
  want_v, want_g = jax.value_and_grad(_loss_fn("scan"), argnums=(0, 1))(params, h, xs)
  got_v, got_g = jax.jit(jax.value_and_grad(_loss_fn(kind), argnums=(0, 1)))(params, h, xs)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want_g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_remat_policy_reaches_the_body():
  h, xs, variables = _setup()

  def jaxpr(remat):
    stack = repeat(Affine, N, Compute(remat=remat))
    f = lambda p: jnp.sum(stack(name="blocks").apply({"params": p}, (h, jnp.zeros(B)), xs)[0][0])
    text = str(jax.make_jaxpr(f)(variables["params"]))
    return [line.strip() for line in text.splitlines() if "policy=" in line]
  assert jaxpr("none") == []
  assert jaxpr("full") == ["policy=None"]
  (policy,) = jaxpr("dots_saveable")
  assert policy != "policy=None" and "dots" in policy.lower()


def test_forward_mode_through_the_scan():
  h, xs, variables = _setup()
  loss = _loss_fn("scan")
  params = variables["params"]
  t = jax.tree_util.tree_map(lambda a: jnp.ones_like(a) * 0.3, params)
  _, jvp = jax.jvp(lambda p: loss(p, h, xs), (params,), (t,))
  g = jax.grad(loss)(params, h, xs)
  want = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                             jax.tree_util.tree_leaves(t)))
  np.testing.assert_allclose(jvp, want, rtol=1e-5)


def test_bad_length_is_refused():
  with pytest.raises(ValueError, match="length must be an int >= 1"):
    repeat(Affine, 0, Compute())
