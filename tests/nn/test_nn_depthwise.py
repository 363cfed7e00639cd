"""The depthwise convolution: the shifted forms (custom JVP; hand-written VJP) equal XLA's
grouped convolution and its autodiff; the default works in forward mode; bad arguments
are errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import depthwise


@pytest.mark.parametrize("impl,dilation", [("shift", 1), ("shift_vjp", 2)])
def test_depthwise_shift_equals_grouped(impl, dilation):
  # Values and both gradients (the shift form has a hand-written VJP) against XLA's
  # grouped convolution and its autodiff.
  rx, rk = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(rx, (2, 6, 5, 7))
  k = jax.random.normal(rk, (5, 5, 1, 7))
  pad = 2 * dilation
  conv = lambda impl: lambda x, k: depthwise.depthwise_conv(x, k, pad, dilation, impl=impl)
  np.testing.assert_allclose(conv(impl)(x, k), conv("grouped")(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda impl: lambda x, k: jnp.sum(jnp.sin(conv(impl)(x, k)))
  ga = jax.jit(jax.grad(loss(impl), argnums=(0, 1)))(x, k)
  gb = jax.grad(loss("grouped"), argnums=(0, 1))(x, k)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="depthwise impl"):
    depthwise.depthwise_conv(x, k, 2, impl="fft")
  with pytest.raises(ValueError, match="padding must be"):
    depthwise.depthwise_conv(x, k, 1)


def test_default_works_in_forward_mode():
  # jvp = <grad, tangent>, jacfwd = jacrev, and a masked kernel's skipped taps (NVAE's
  # autoregressive 5x5) in both modes.
  rx, rk, rt = jax.random.split(jax.random.PRNGKey(5), 3)
  x = jax.random.normal(rx, (1, 4, 3, 2))
  k = jax.random.normal(rk, (3, 3, 1, 2))
  tx, tk = jax.random.normal(rt, x.shape), jax.random.normal(rt, k.shape)
  taps = ((0, 0), (0, 1), (1, 0), (1, 1))
  f = lambda x, k: jnp.sum(jnp.sin(depthwise.depthwise_conv(x, k, 1, taps=taps)))
  _, jvp = jax.jvp(f, (x, k), (tx, tk))
  gx, gk = jax.grad(f, argnums=(0, 1))(x, k)
  np.testing.assert_allclose(jvp, jnp.vdot(gx, tx) + jnp.vdot(gk, tk), rtol=1e-5)
  y = lambda x: depthwise.depthwise_conv(x, k, 1, taps=taps)
  np.testing.assert_allclose(jax.jacfwd(y)(x), jax.jacrev(y)(x), rtol=1e-6, atol=1e-6)
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(lambda x: depthwise.depthwise_conv(x, k, 1, impl="shift_vjp"), (x,), (tx,))


def test_auto_impl_per_backend():
  """"auto" is the shifted sum on CPU and XLA's grouped convolution elsewhere; an unknown
  name is an error listing the choices."""
  from dgmjax.nn.depthwise import resolve_impl
  assert resolve_impl("auto", "cpu") == "shift"
  assert resolve_impl("auto", "gpu") == resolve_impl("auto", "tpu") == "grouped"
  assert resolve_impl("grouped", "cpu") == "grouped"
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 6, 4))
  k = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 1, 4))
  prims = lambda impl: {e.primitive.name for e in jax.make_jaxpr(
      lambda a, b: depthwise.depthwise_conv(a, b, 2, impl=impl))(x, k).eqns}
  assert prims("auto") == prims("shift") != prims("grouped")
  with pytest.raises(ValueError, match="depthwise impl must be one of"):
    depthwise.depthwise_conv(x, k, 2, impl="fast")
