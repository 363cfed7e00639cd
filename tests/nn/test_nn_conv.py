"""The 'same' convolution's formulations (``dgmjax.nn.conv``): every impl equals a
brute-force cross-correlation in value, and XLA's autodiff in both gradients, alone and
inside a ``lax.scan`` (where the hand-written VJP exists for); "auto" resolves per
backend; bad arguments are errors naming what was expected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import conv

CONCRETE = ("xla", "matmul", "xla_matmul")


def _brute(x, k):
  """y[b,r,c,o] = sum_{i,j,q} k[i,j,q,o] x[b, r+i-p, c+j-p, q] with zeros outside: numpy."""
  x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
  b, h, w, _ = x.shape
  n, p = k.shape[0], k.shape[0] // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  y = np.zeros((b, h, w, k.shape[3]))
  for i in range(n):
    for j in range(n):
      y += np.einsum("bhwq,qo->bhwo", xp[:, i:i + h, j:j + w], k[i, j])
  return y


@pytest.mark.parametrize("ksize,cin,cout", [(3, 3, 5), (3, 6, 2), (5, 4, 4), (1, 3, 7)])
@pytest.mark.parametrize("impl", CONCRETE + ("auto",))
def test_values_and_gradients_agree(impl, ksize, cin, cout):
  rx, rk, rc = jax.random.split(jax.random.PRNGKey(ksize * 100 + cin * 10 + cout), 3)
  x = jax.random.normal(rx, (2, 5, 6, cin))
  k = jax.random.normal(rk, (ksize, ksize, cin, cout))
  cot = jax.random.normal(rc, (2, 5, 6, cout))
  np.testing.assert_allclose(conv.conv_same(x, k, impl), _brute(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda i: lambda x, k: jnp.sum(jnp.sin(conv.conv_same(x, k, i)) * cot)
  want = jax.grad(loss("xla"), argnums=(0, 1))(x, k)
  got = jax.jit(jax.grad(loss(impl), argnums=(0, 1)))(x, k)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", CONCRETE)
def test_gradients_inside_scan_agree(impl):
  # The case the hand-written VJP is for: the convolution in a scan body with the
  # kernels stacked over the scan axis.
  rx, rk = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(rx, (2, 4, 4, 4))
  ks = 0.3 * jax.random.normal(rk, (3, 3, 3, 4, 4))

  def run(i):
    def f(ks, x):
      def body(h, k):
        return jnp.tanh(conv.conv_same(h, k, i)), None
      return jnp.sum(jax.lax.scan(body, x, ks)[0] ** 2)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(ks, x)
  (v0, g0), (v1, g1) = run("xla"), run(impl)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  for a, b in zip(g1, g0):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", CONCRETE)
def test_forward_mode_equals_reverse_mode(impl):
  # jvp = <grad, tangent>; jacfwd = jacrev; a Hessian-vector product (forward over
  # reverse) equals the one from reverse over reverse.
  rx, rk, rt = jax.random.split(jax.random.PRNGKey(7), 3)
  x = jax.random.normal(rx, (1, 3, 4, 2))
  k = 0.5 * jax.random.normal(rk, (3, 3, 2, 3))
  tx, tk = jax.random.normal(rt, x.shape), jax.random.normal(rt, k.shape)
  f = lambda x, k: jnp.sum(jnp.sin(conv.conv_same(x, k, impl)))
  _, jvp = jax.jvp(f, (x, k), (tx, tk))
  gx, gk = jax.grad(f, argnums=(0, 1))(x, k)
  np.testing.assert_allclose(jvp, jnp.vdot(gx, tx) + jnp.vdot(gk, tk), rtol=1e-5)
  y = lambda k: conv.conv_same(x, k, impl)
  np.testing.assert_allclose(jax.jacfwd(y)(k), jax.jacrev(y)(k), rtol=1e-5, atol=1e-6)
  # second order: <d/de grad_k f(x + e tx, k + e tk), u> by forward over reverse equals
  # <grad_{x,k} <grad_k f, u>, (tx, tk)> by reverse over reverse.
  u = jax.random.normal(rx, k.shape)
  g = jax.grad(f, argnums=1)
  hvp = jax.jvp(g, (x, k), (tx, tk))[1]
  rx2, rk2 = jax.grad(lambda x, k: jnp.vdot(g(x, k), u), argnums=(0, 1))(x, k)
  np.testing.assert_allclose(jnp.vdot(hvp, u), jnp.vdot(rx2, tx) + jnp.vdot(rk2, tk),
                             rtol=1e-4)


def test_bfloat16_input_keeps_its_dtype():
  x = jnp.ones((1, 4, 4, 3), jnp.bfloat16)
  k = jnp.ones((3, 3, 3, 8), jnp.float32)
  for impl in CONCRETE:
    y, vjp = jax.vjp(lambda x, k, i=impl: conv.conv_same(x, k, i), x, k)
    assert y.dtype == jnp.bfloat16
    dx, dk = vjp(jnp.ones_like(y))
    assert dx.dtype == jnp.bfloat16 and dk.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y[0, 1, 1], np.float32), 27.0)


def test_auto_resolves_per_backend():
  assert conv.resolve_impl("auto", 512, 12, backend="cpu") == "matmul"
  assert conv.resolve_impl("auto", 6, 512, backend="cpu") == "xla_matmul"
  assert conv.resolve_impl("auto", 6, 512, backend="gpu") == "xla"
  assert conv.resolve_impl("auto", 512, 12, backend="tpu") == "xla"
  assert conv.resolve_impl("matmul", 6, 512, backend="gpu") == "matmul"


def test_bad_arguments_are_value_errors():
  x = jnp.ones((1, 4, 4, 3))
  with pytest.raises(ValueError, match="conv impl must be one of"):
    conv.conv_same(x, jnp.ones((3, 3, 3, 2)), "cudnn")
  with pytest.raises(ValueError, match=r"kernel must be \[k,k,3,O\] with odd k"):
    conv.conv_same(x, jnp.ones((2, 2, 3, 2)))
  with pytest.raises(ValueError, match=r"kernel must be \[k,k,3,O\]"):
    conv.conv_same(x, jnp.ones((3, 3, 4, 2)))
  with pytest.raises(ValueError, match=r"x must be \[B,H,W,I\]"):
    conv.conv_same(jnp.ones((4, 4, 3)), jnp.ones((3, 3, 3, 2)))
