"""dgmjax: deep generative image models (LMConv, Glow, NVAE) in JAX/Flax.

Imports here stay light: ``import dgmjax`` loads no model and no dataset code.
Use ``dgmjax.models.create(name, image_shape=..., num_bins=...)``.
"""

__version__ = "0.1.0"

from dgmjax import images, models  # noqa: E402,F401  (both are pure jax/numpy)
