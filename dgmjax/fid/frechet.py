"""Feature statistics and the Fréchet distance between two Gaussians.

FID (Heusel et al. 2017) fits a Gaussian N(mu, Sigma) to the Inception pool3 features
of each image set and reports

    d^2 = ||mu_1 - mu_2||^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^(1/2)).

``tr((S_1 S_2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of
the symmetric positive semi-definite S_1^(1/2) S_2 S_1^(1/2), which has the eigenvalues
of S_1 S_2 (float64; negative round-off eigenvalues count as 0). Statistics are kept in
pytorch-fid's ``.npz`` format (arrays ``mu`` [D] and ``sigma`` [D, D], Sigma the unbiased
sample covariance as ``np.cov(features, rowvar=False)``), so published reference
statistics are used as they are.
"""

from __future__ import annotations

import os

import numpy as np


class RunningStats:
  """Mean and unbiased covariance of feature rows added batch by batch (float64 sums:
  memory D^2, not N x D)."""

  def __init__(self, dim: int):
    self.n = 0
    self._sum = np.zeros((dim,), np.float64)
    self._outer = np.zeros((dim, dim), np.float64)

  def add(self, feats) -> None:
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[1] != self._sum.shape[0]:
      raise ValueError(f"features must be [N, {self._sum.shape[0]}]; got {f.shape}")
    self.n += f.shape[0]
    self._sum += f.sum(axis=0)
    self._outer += f.T @ f

  def finish(self) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D], sigma [D, D])."""
    if self.n < 2:
      raise ValueError(f"FID statistics need at least 2 images; got {self.n}")
    mu = self._sum / self.n
    sigma = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
    return mu, (sigma + sigma.T) / 2


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """The squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (module
  docstring). mu: [D]; sigma: [D, D] symmetric positive semi-definite."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0]
  for name, v, shape in (("mu2", mu2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
    if v.shape != shape:
      raise ValueError(f"{name} must have shape {shape}; got {v.shape}")
  w, v = np.linalg.eigh((s1 + s1.T) / 2)
  root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  inner = root1 @ s2 @ root1
  eig = np.linalg.eigvalsh((inner + inner.T) / 2)
  tr_covmean = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def save_stats(path: str, mu, sigma) -> str:
  """Writes pytorch-fid's ``.npz`` (``mu``, ``sigma``) atomically; returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, mu=np.asarray(mu), sigma=np.asarray(sigma))
  os.replace(tmp, path)
  return path


def load_stats(path: str, dim: int = 2048) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) from a pytorch-fid ``.npz``; ValueError naming the file when it is
  missing, unreadable, lacks ``mu``/``sigma``, or holds other shapes or non-finite values."""
  if not os.path.isfile(path):
    raise ValueError(f"FID statistics file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
  except KeyError:
    raise ValueError(f"{path} is not FID statistics: it needs arrays 'mu' and 'sigma' "
                     f"(pytorch-fid's .npz format)") from None
  except Exception as e:  # pylint: disable=broad-except  (zip/format errors of a bad file)
    raise ValueError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
  if mu.shape != (dim,) or sigma.shape != (dim, dim):
    raise ValueError(f"{path} holds mu {mu.shape} and sigma {sigma.shape}; FID statistics "
                     f"of pool3 features are [{dim}] and [{dim}, {dim}]")
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    raise ValueError(f"{path} holds non-finite statistics: recompute them")
  return mu, sigma
