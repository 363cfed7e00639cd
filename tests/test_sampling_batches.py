"""``dgmjax sample`` draws in device-sized batches: device memory is bounded by the batch,
not by --num. Checked on the independent model: one compiled sampler for every batch,
the images cut to --num, independent batches (distinct keys), a single batch equal to
the one-program draw."""

from __future__ import annotations

import jax
import numpy as np

import dgmjax
from dgmjax.commands.sampling import draw_in_batches
from dgmjax.train import loop


def _experiment():
  model = dgmjax.models.create("independent", image_shape=(2, 2, 1), num_bins=17)
  variables = model.init(jax.random.key(0))
  return loop.Experiment(None, model, None, None, 17, None, None), variables


def test_batches_bound_the_program_and_keep_the_draw():
  exp, variables = _experiment()
  rng = jax.random.key(3)
  x = draw_in_batches(exp, variables, 10, rng, batch=4, progress=False)
  assert x.shape == (10, 2, 2, 1) and x.dtype == np.uint8
  assert [k[1] for k in exp._compiled] == [4]          # one program, 4 images, used 3x
  a, b = x[:4], x[4:8]
  assert not np.array_equal(a, b)                      # batches use distinct keys
  again = draw_in_batches(exp, variables, 10, rng, batch=4, progress=False)
  np.testing.assert_array_equal(again, x)
  single = draw_in_batches(exp, variables, 4, rng, batch=4, progress=False)
  np.testing.assert_array_equal(single, loop.draw_samples(exp, variables, 4, rng))
