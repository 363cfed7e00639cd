"""The depthwise convolution: the shifted form with its hand-written VJP equals XLA's
grouped convolution and its autodiff; bad arguments are errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import depthwise


@pytest.mark.parametrize("dilation", [1, 2])
def test_depthwise_shift_equals_grouped(dilation):
  # Values and both gradients (the shift form has a hand-written VJP) against XLA's
  # grouped convolution and its autodiff.
  rx, rk = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(rx, (2, 6, 5, 7))
  k = jax.random.normal(rk, (5, 5, 1, 7))
  pad = 2 * dilation
  conv = lambda impl: lambda x, k: depthwise.depthwise_conv(x, k, pad, dilation, impl=impl)
  np.testing.assert_allclose(conv("shift")(x, k), conv("grouped")(x, k), rtol=1e-5, atol=1e-5)
  loss = lambda impl: lambda x, k: jnp.sum(jnp.sin(conv(impl)(x, k)))
  ga = jax.jit(jax.grad(loss("shift"), argnums=(0, 1)))(x, k)
  gb = jax.grad(loss("grouped"), argnums=(0, 1))(x, k)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="depthwise impl"):
    depthwise.depthwise_conv(x, k, 2, impl="fft")
  with pytest.raises(ValueError, match="padding must be"):
    depthwise.depthwise_conv(x, k, 1)


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
