"""Output heads: the network's per-pixel outputs -> a distribution over one pixel.

Every head scores/samples ALL channels of a pixel jointly given the earlier pixels.

- ``dmol``: discretised logistic mixture with M components (PixelCNN++). Channel layout
  of the network output, as ajayjain/lmconv: ``[M mixture logits | C x (means M,
  log_scales M[, coeffs M])]``, the coefficient block only for C == 3 (RGB coupling), so
  n_out = 10 M for RGB and 3 M for greyscale (100 and 30 with M = 10).
- ``softmax``: an independent ``num_bins``-way categorical per channel, n_out = C K; for
  C = 1, K = 2 it is the official binarised head (2-way softmax, n_out = 2).
- ``bernoulli``: one logit per channel (num_bins 2), n_out = C.
- ``auto``: ``softmax`` for binary greyscale data (as the official code), else ``dmol``.
"""

from __future__ import annotations

import jax.numpy as jnp

from dgmjax import distributions as D

HEADS = ("auto", "dmol", "softmax", "bernoulli")


def resolve(head: str, channels: int, num_bins: int) -> str:
  if head not in HEADS:
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
  if head == "auto":
    return "softmax" if channels == 1 and num_bins == 2 else "dmol"
  if head == "bernoulli" and num_bins != 2:
    raise ValueError(f"the bernoulli head needs num_bins=2; got {num_bins}")
  return head


def num_outputs(head: str, channels: int, num_bins: int, mixtures: int) -> int:
  if head == "dmol":
    return mixtures * (1 + channels * (3 if channels == 3 else 2))
  if head == "softmax":
    return channels * num_bins
  return channels


def log_prob(head, out, x, num_bins, mixtures):
  """out: float [..., n_out]; x: int [..., C] -> float32 [...] log p(pixel | context)."""
  c = x.shape[-1]
  if head == "dmol":
    logits, means, log_scales, coeffs = D.mixture_params(out, c, mixtures)
    return D.discretized_logistic_mixture_log_prob(x, logits, means, log_scales, coeffs,
                                                   num_bins=num_bins)
  if head == "softmax":
    logits = out.reshape(out.shape[:-1] + (c, num_bins))
    return D.categorical_log_prob(x, logits).sum(-1)
  return D.bernoulli_log_prob(x, out).sum(-1)


def sample(head, rng, out, channels, num_bins, mixtures, mixture_temperature=1.0,
           logistic_temperature=1.0, temperature=1.0):
  """out: float [..., n_out] -> uint8 [..., C], one draw per pixel.

  Temperatures (floats > 0; may be traced):

  - ``temperature`` T, every head: softmax/bernoulli logits / T; for ``dmol`` the mixture
    logits / T and every logistic scale times T (NVlabs/NVAE ``DiscMixLogistic.sample(t)``).
  - ``mixture_temperature`` T_m (``dmol`` only), as ajayjain/lmconv
    ``sample_from_discretized_mix_logistic(..., mixture_temperature)``: the network's
    component parameters after the M mixture logits (means, log-scales and RGB coefficient
    pre-activations) are divided by T_m before the log-scales are clamped at -7; the
    mixture logits are left alone (the official code's choice, kept as it is).
  - ``logistic_temperature`` T_l (``dmol`` only), as the official sampler: the chosen
    component's logistic scale times T_l.

  So a ``dmol`` draw is ``y = mu/T_m + exp(max(log_s/T_m, -7)) T_l T L`` with L standard
  logistic and the component drawn from softmax(logits / T). All at 1 draw from the
  model's distribution (``log_prob``). Unlike the official sampler, the RGB coupling uses
  the rounded earlier levels (the distribution ``log_prob`` scores), and the temperatures
  also apply to greyscale mixtures (the official 1-d sampler has none).
  """
  if head == "dmol":
    m = mixtures
    scaled = jnp.concatenate([out[..., :m] / temperature, out[..., m:] / mixture_temperature],
                             axis=-1)
    logits, means, log_scales, coeffs = D.mixture_params(scaled, channels, mixtures)
    return D.discretized_logistic_mixture_sample(
        rng, logits, means, log_scales, coeffs, num_bins=num_bins, mixture_temperature=1.0,
        logistic_temperature=logistic_temperature * temperature)
  if head == "softmax":
    logits = out.reshape(out.shape[:-1] + (channels, num_bins))
    return D.categorical_sample(rng, logits, temperature)
  return D.bernoulli_sample(rng, out, temperature)
