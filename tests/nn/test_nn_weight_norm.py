"""Weight normalisation: both official parameterisations from one function."""

import jax
import numpy as np
import torch

from dgmjax.nn.weight_norm import norm, weight_norm


def test_matches_torch_weight_norm_and_the_nvae_form():
  v = np.asarray(jax.random.normal(jax.random.key(0), (3, 3, 4, 5)))
  g = np.asarray(jax.random.uniform(jax.random.key(1), (5,), minval=0.5, maxval=2.0))
  # torch.nn.utils.weight_norm on an [O,I,kh,kw] conv weight (dim=0): g * v / ||v||.
  conv = torch.nn.Conv2d(4, 5, 3)
  conv.weight.data = torch.from_numpy(v.transpose(3, 2, 0, 1).copy())
  conv = torch.nn.utils.weight_norm(conv)
  conv.weight_g.data = torch.from_numpy(g.reshape(5, 1, 1, 1).copy())
  conv(torch.zeros(1, 4, 3, 3))  # recomputes .weight from g and v
  want = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(weight_norm(v, g, (0, 1, 2)), want, rtol=1e-5, atol=1e-6)
  # NVAE: exp(log g) * v / (||v|| + 1e-5).
  n = np.sqrt((v ** 2).sum(axis=(0, 1, 2)))
  np.testing.assert_allclose(norm(v, (0, 1, 2)), n, rtol=1e-6)
  np.testing.assert_allclose(weight_norm(v, g, (0, 1, 2), eps=1e-5), g * v / (n + 1e-5),
                             rtol=1e-6)
