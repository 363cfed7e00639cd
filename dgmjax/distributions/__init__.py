"""Probability distributions shared by the models: pure, jittable jax.numpy functions.

- ``logistic``: discretised mixture of logistics over image levels (PixelCNN++, NVAE).
- ``bernoulli``: Bernoulli and categorical over discrete levels, from logits.
- ``normal``: diagonal normal log-density, reparameterised sampling and analytic KL.
"""

from __future__ import annotations

from dgmjax.distributions.bernoulli import (bernoulli_log_prob, bernoulli_sample,
                                            categorical_log_prob, categorical_sample)
from dgmjax.distributions.logistic import (discretized_logistic_mixture_channel_log_prob,
                                           discretized_logistic_mixture_log_prob,
                                           discretized_logistic_mixture_sample, mixture_params)
from dgmjax.distributions.normal import normal_kl, normal_log_prob, normal_sample

__all__ = [
    "bernoulli_log_prob", "bernoulli_sample", "categorical_log_prob", "categorical_sample",
    "discretized_logistic_mixture_channel_log_prob", "discretized_logistic_mixture_log_prob",
    "discretized_logistic_mixture_sample", "mixture_params", "normal_kl", "normal_log_prob",
    "normal_sample",
]
