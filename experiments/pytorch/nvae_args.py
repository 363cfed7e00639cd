"""The official NVAE argument namespace for the project's PyTorch NVAE
(``experiments/pytorch/nvae.py``): the architecture and loss arguments of NVlabs/NVAE's
``train.py`` with their defaults (``default_args``), the reference layouts
(``tiny_args``, ``faithful_args``), the namespace of a dgmjax configuration
(``args_from_hparams``), and the group and image sizes they imply.
"""

from __future__ import annotations

import argparse

BINARY_DATASETS = ("mnist", "omniglot")
CROP_DATASETS = ("mnist", "omniglot", "stacked_mnist")

# The architecture and loss arguments of the official train.py, with its defaults.
OFFICIAL_DEFAULTS = dict(
    dataset="mnist", arch_instance="res_mbconv", num_x_bits=8,
    num_latent_scales=1, num_groups_per_scale=10, num_latent_per_group=20,
    ada_groups=False, min_groups_per_scale=1,
    num_channels_enc=32, num_preprocess_blocks=2, num_preprocess_cells=3,
    num_cell_per_cond_enc=1,
    num_channels_dec=32, num_postprocess_blocks=2, num_postprocess_cells=3,
    num_cell_per_cond_dec=1, num_mixture_dec=10,
    use_se=False, res_dist=False, num_nf=0,
    learning_rate=1e-2, learning_rate_min=1e-4, weight_decay=3e-4,
    weight_decay_norm=0.0, weight_decay_norm_init=10.0, weight_decay_norm_anneal=False,
    kl_anneal_portion=0.3, kl_const_portion=1e-4, kl_const_coeff=1e-4,
    epochs=200, warmup_epochs=5, batch_size=200,
)


def default_args(**overrides) -> argparse.Namespace:
  """An official-style argument namespace: the train.py defaults, then ``overrides``."""
  unknown = sorted(set(overrides) - set(OFFICIAL_DEFAULTS) - {"input_size"})
  if unknown:
    raise ValueError(f"unknown NVAE arguments {unknown}; expected names among "
                     f"{sorted(OFFICIAL_DEFAULTS)} (or input_size)")
  return argparse.Namespace(**{**OFFICIAL_DEFAULTS, **overrides})


def tiny_args(dataset: str) -> argparse.Namespace:
  """The ``nvae_mnist_tiny`` / ``nvae_cifar_tiny`` configurations of the reference layouts."""
  common = dict(num_channels_enc=8, num_channels_dec=8, num_latent_per_group=4,
                num_groups_per_scale=2, num_cell_per_cond_enc=1, num_cell_per_cond_dec=1,
                num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1,
                num_postprocess_cells=2, use_se=True, res_dist=True, weight_decay_norm=1e-2)
  if dataset == "mnist":
    return default_args(dataset="mnist", num_latent_scales=2, ada_groups=True, num_nf=0, **common)
  if dataset == "cifar10":
    return default_args(dataset="cifar10", num_latent_scales=1, num_nf=1, **common)
  raise ValueError(f"tiny_args knows 'mnist' and 'cifar10'; got {dataset!r}")


def faithful_args(dataset: str) -> argparse.Namespace:
  """The README training commands for MNIST and CIFAR-10 (33.4M / 130.9M parameters)."""
  if dataset == "mnist":
    return default_args(
        dataset="mnist", num_latent_scales=2, num_groups_per_scale=10, num_postprocess_cells=3,
        num_preprocess_cells=3, num_cell_per_cond_enc=2, num_cell_per_cond_dec=2,
        num_latent_per_group=20, num_preprocess_blocks=2, num_postprocess_blocks=2,
        weight_decay_norm=1e-2, num_channels_enc=32, num_channels_dec=32, num_nf=0,
        ada_groups=True, use_se=True, res_dist=True, batch_size=200, epochs=400)
  if dataset == "cifar10":
    return default_args(
        dataset="cifar10", num_channels_enc=128, num_channels_dec=128, num_postprocess_cells=2,
        num_preprocess_cells=2, num_latent_scales=1, num_latent_per_group=20,
        num_cell_per_cond_enc=2, num_cell_per_cond_dec=2, num_preprocess_blocks=1,
        num_postprocess_blocks=1, num_groups_per_scale=30, batch_size=32,
        weight_decay_norm=1e-2, num_nf=1, use_se=True, res_dist=True, epochs=400)
  raise ValueError(f"faithful_args knows 'mnist' and 'cifar10'; got {dataset!r}")


def args_from_hparams(image_shape, num_bins=256, *, channels=32, scales=1, groups_per_scale=2,
                      latents_per_group=20, cells_per_group=2, preprocess_blocks=1,
                      preprocess_cells=2, postprocess_blocks=1, postprocess_cells=2, num_flows=0,
                      use_se=True, ada_groups=False, min_groups_per_scale=1, num_mixtures=10,
                      **training) -> argparse.Namespace:
  """dgmjax ``create("nvae", ...)`` hyper-parameters -> the official namespace of the same
  network (inverse of ``dgmjax.convert.nvae.hparams_from_args``), for benchmarks.

  Official datasets fix the image: (32,32,1) with num_bins 2 is MNIST (Bernoulli output,
  28x28 crop), (S,S,3) with 2**b bins is cifar10 (S = 32) or imagenet_S / celeba_64.
  ``training`` may hold weight_decay_norm, weight_decay_norm_init,
  weight_decay_norm_anneal, kl_const_coeff; dgmjax-only options (compute, decoder,
  crop_to, kl_*_steps, kl_balance, num_power_iter, dmol_edge) are ignored.
  """
  h, w, c = image_shape
  if (h, w, c) == (32, 32, 1) and num_bins == 2:
    dataset, bits = "mnist", 8
  elif c == 3 and h == w and num_bins >= 2 and (num_bins & (num_bins - 1)) == 0:
    dataset = {32: "cifar10", 64: "celeba_64"}.get(h, f"imagenet_{h}")
    bits = num_bins.bit_length() - 1
  else:
    raise ValueError(f"no official NVAE dataset has images {tuple(image_shape)} with "
                     f"{num_bins} levels; expected (32,32,1)/2 or (S,S,3)/2**bits")
  keep = {k: training[k] for k in ("weight_decay_norm", "weight_decay_norm_init",
                                   "weight_decay_norm_anneal", "kl_const_coeff") if k in training}
  return default_args(
      dataset=dataset, num_x_bits=bits, num_channels_enc=channels, num_channels_dec=channels,
      num_latent_scales=scales, num_groups_per_scale=groups_per_scale,
      num_latent_per_group=latents_per_group, num_cell_per_cond_enc=cells_per_group,
      num_cell_per_cond_dec=cells_per_group, num_preprocess_blocks=preprocess_blocks,
      num_preprocess_cells=preprocess_cells, num_postprocess_blocks=postprocess_blocks,
      num_postprocess_cells=postprocess_cells, num_nf=num_flows, use_se=use_se,
      ada_groups=ada_groups, min_groups_per_scale=min_groups_per_scale,
      num_mixture_dec=num_mixtures, res_dist=True, **keep)


def groups_per_scale(num_scales, num_groups, is_adaptive, divider=2, minimum_groups=1):
  """Groups at each scale, finest first; adaptive halves the count at each coarser scale."""
  out, n = [], num_groups
  for _ in range(num_scales):
    if n < 1:
      raise ValueError(f"groups per scale fell below 1: {out}")
    out.append(n)
    if is_adaptive:
      n = max(minimum_groups, n // divider)
  return out


def input_size(dataset: str) -> int:
  if dataset in ("mnist", "omniglot", "cifar10", "stacked_mnist"):
    return 32
  if dataset.startswith(("celeba", "imagenet", "lsun")):
    return int(dataset.split("_")[-1])
  if dataset == "ffhq":
    return 256
  raise ValueError(f"unknown dataset {dataset!r}")
