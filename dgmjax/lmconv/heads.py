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


def _dmol_params(out, channels, mixtures):
  m = mixtures
  logits = out[..., :m]
  per = 3 if channels == 3 else 2
  rest = out[..., m:].reshape(out.shape[:-1] + (channels, per * m))
  coeffs = rest[..., 2 * m:3 * m] if channels == 3 else None
  return logits, rest[..., :m], rest[..., m:2 * m], coeffs


def log_prob(head, out, x, num_bins, mixtures):
  """out: float [..., n_out]; x: int [..., C] -> float32 [...] log p(pixel | context)."""
  c = x.shape[-1]
  if head == "dmol":
    logits, means, log_scales, coeffs = _dmol_params(out, c, mixtures)
    return D.discretized_logistic_mixture_log_prob(x, logits, means, log_scales, coeffs,
                                                   num_bins=num_bins)
  if head == "softmax":
    logits = out.reshape(out.shape[:-1] + (c, num_bins))
    return D.categorical_log_prob(x, logits).sum(-1)
  return D.bernoulli_log_prob(x, out).sum(-1)


def sample(head, rng, out, channels, num_bins, mixtures, mixture_temperature=1.0,
           logistic_temperature=1.0, temperature=1.0):
  """out: float [..., n_out] -> uint8 [..., C]. ``temperature`` is for softmax/bernoulli."""
  if head == "dmol":
    logits, means, log_scales, coeffs = _dmol_params(out, channels, mixtures)
    return D.discretized_logistic_mixture_sample(
        rng, logits, means, log_scales, coeffs, num_bins=num_bins,
        mixture_temperature=mixture_temperature, logistic_temperature=logistic_temperature)
  if head == "softmax":
    logits = out.reshape(out.shape[:-1] + (channels, num_bins))
    return D.categorical_sample(rng, logits, temperature)
  return D.bernoulli_sample(rng, out, temperature)
