"""Import an official-layout NVAE checkpoint (NVlabs/NVAE, or experiments/pytorch/nvae.py).

An official checkpoint is ``{"state_dict": ..., "args": argparse.Namespace, ...}``
(train.py). ``load_nvae`` reads it safely (``dgmjax.convert.common.load_checkpoint``:
``weights_only=True`` with only ``argparse.Namespace`` allow-listed), builds the dgmjax
model from ``args`` when none is given, and maps every tensor onto the Flax variables:

    official key (PyTorch layout)                    dgmjax variable (Flax layout)
    prior_ftr0 [C,h,w]                               params/prior_ftr0 [h,w,C]
    <conv>.weight [O,I,kh,kw], .bias [O]             .../kernel [kh,kw,I,O], .../bias
    <conv>.log_weight_norm [O,1,1,1]                 .../log_weight_norm [O]
    <bn>.weight, .bias                               params .../scale, .../bias
    <bn>.running_mean, .running_var                  batch_stats .../mean, .../var
    se.se.{0,2}.weight [out,in]                      .../se/se_{0,2}/kernel [in,out]

Module paths follow ``dgmjax.nvae.hierarchy``'s table (``pre_process.3`` ->
``pre_process_3``, ``enc0.1`` -> ``enc0``, ``dec_sampler.2.1`` -> ``dec_sampler_2``,
``image_conditional.1`` -> ``image_conditional``, ``_ops.k`` -> ``ops_k``, an up cell's
``skip.1`` -> ``skip/conv``, an inverted residual's ``conv.{0..4}`` (``conv.{1..5}`` after
up-sampling) -> ``bn_in``, ``expand``, ``depthwise``, ``project``, ``bn_out``, an IAF
cell's ``convz.{0,2}`` -> ``convz_{0,2}``). ``num_batches_tracked`` is not used (dgmjax
BN has a fixed momentum). ``weight_normalized`` aliases ``weight`` in convolutions built
without weight normalisation: when present it must equal ``weight``; it may be absent
(older official checkpoints lack it, which is why the official evaluate.py loads
non-strictly). Any other missing, unexpected or mis-shaped key raises ValueError naming it.

The spectral regulariser's vectors are not in official checkpoints: they are initialised
from the loaded kernels as the official first call does (random unit vectors, then
``10 * num_power_iter`` power iterations), in numpy (``spectral_state``), so loading
compiles nothing; the kernels are grouped exactly as the model sows them.

The model stacks each scale's repeated groups on a leading axis (``dgmjax.nvae.hierarchy``);
the official layout is the per-layer one. ``load_nvae`` maps the file onto the per-layer
tree of the model's shapes (``nvae_layout.per_layer_shapes``) and returns the stacked
variables. ``stack_groups`` converts variables saved in dgmjax's old per-layer layout
(before the stacked one; same module names as the official file) once.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dgmjax.convert.common import (StateDict, check_model, load_checkpoint, to_numpy,
                                   torch_conv_to_flax)
from dgmjax.convert import nvae_layout

_BINARY = ("mnist", "omniglot")
_SIZES = {"mnist": 32, "omniglot": 32, "cifar10": 32, "ffhq": 256}


def _arg(args, name, default=None, required=True):
  if hasattr(args, name):
    return getattr(args, name)
  if required and default is None:
    raise ValueError(f"NVAE checkpoint args lack {name!r}")
  return default


def hparams_from_args(args) -> dict[str, Any]:
  """Official ``args`` (argparse.Namespace or mapping) -> kwargs of
  ``dgmjax.models.create("nvae", **kwargs)`` (image_shape and num_bins included).

  Raises ValueError for a configuration dgmjax does not build: different encoder and
  decoder widths or cells per group, an ``arch_instance`` other than ``res_mbconv``,
  ``res_dist`` off, a Normal decoder (``num_mixture_dec == 1``) or an unknown dataset.
  """
  if isinstance(args, Mapping):
    import argparse
    args = argparse.Namespace(**args)
  dataset = _arg(args, "dataset")
  if dataset in _SIZES:
    size = _SIZES[dataset]
  elif re.fullmatch(r"(celeba|imagenet|lsun_bedroom|lsun_church)_\d+", str(dataset)):
    size = int(dataset.split("_")[-1])
  else:
    raise ValueError(f"unsupported NVAE dataset {dataset!r}; expected mnist, omniglot, "
                     "cifar10, celeba_N, imagenet_N, lsun_*_N or ffhq")
  enc, dec = _arg(args, "num_channels_enc"), _arg(args, "num_channels_dec")
  if enc != dec:
    raise ValueError(f"dgmjax NVAE needs num_channels_enc == num_channels_dec; got {enc}, {dec}")
  ce, cd = _arg(args, "num_cell_per_cond_enc"), _arg(args, "num_cell_per_cond_dec")
  if ce != cd:
    raise ValueError(f"dgmjax NVAE needs num_cell_per_cond_enc == num_cell_per_cond_dec; "
                     f"got {ce}, {cd}")
  arch = _arg(args, "arch_instance", "res_mbconv", required=False)
  if arch != "res_mbconv":
    raise ValueError(f"dgmjax NVAE builds arch_instance 'res_mbconv' only; got {arch!r}")
  if not _arg(args, "res_dist"):
    raise ValueError("dgmjax NVAE always uses the residual normal posterior; the checkpoint "
                     "has res_dist=False")
  num_mix = _arg(args, "num_mixture_dec", 10, required=False)
  hp: dict[str, Any] = dict(
      channels=int(enc), scales=int(_arg(args, "num_latent_scales")),
      groups_per_scale=int(_arg(args, "num_groups_per_scale")),
      ada_groups=bool(_arg(args, "ada_groups", False, required=False)),
      min_groups_per_scale=int(_arg(args, "min_groups_per_scale", 1, required=False)),
      latents_per_group=int(_arg(args, "num_latent_per_group")), cells_per_group=int(ce),
      preprocess_blocks=int(_arg(args, "num_preprocess_blocks")),
      preprocess_cells=int(_arg(args, "num_preprocess_cells")),
      postprocess_blocks=int(_arg(args, "num_postprocess_blocks")),
      postprocess_cells=int(_arg(args, "num_postprocess_cells")),
      num_flows=int(_arg(args, "num_nf")), use_se=bool(_arg(args, "use_se")))
  if dataset in _BINARY:
    hp.update(image_shape=(size, size, 1), num_bins=2, decoder="bernoulli", crop_to=(28, 28))
  else:
    if num_mix == 1:
      raise ValueError("the official Normal decoder (num_mixture_dec == 1) is not in dgmjax")
    bits = int(_arg(args, "num_x_bits", 8, required=False))
    hp.update(image_shape=(size, size, 3), num_bins=2 ** bits, decoder="dmol",
              num_mixtures=int(num_mix))
  for name in ("weight_decay_norm", "weight_decay_norm_init"):
    if hasattr(args, name):
      hp[name] = float(getattr(args, name))
  if hasattr(args, "weight_decay_norm_anneal"):
    hp["weight_decay_norm_anneal"] = bool(args.weight_decay_norm_anneal)
  if hasattr(args, "kl_const_coeff"):
    hp["kl_const_coeff"] = float(args.kl_const_coeff)
  total = getattr(args, "num_total_iter", None)
  if total:
    hp["kl_warmup_steps"] = int(_arg(args, "kl_anneal_portion") * total)
    hp["kl_const_steps"] = int(_arg(args, "kl_const_portion") * total)
  return hp


# ---- Flax path -> official module prefix -------------------------------------------

_TOP = [(re.compile(r"(pre_process|enc_tower|enc_sampler|nf_cells|dec_tower|post_process)_(\d+)"),
         r"\1.\2"),
        (re.compile(r"dec_sampler_(\d+)"), r"dec_sampler.\1.1"),
        (re.compile(r"enc0"), "enc0.1"),
        (re.compile(r"image_conditional"), "image_conditional.1"),
        (re.compile(r"stem"), "stem")]
_INVERTED = {"bn_in": (0, "bn"), "expand": (1, None), "depthwise": (2, None),
             "project": (3, None), "bn_out": (4, "bn")}


def _torch_prefix(path: tuple[str, ...], up_cells: set[str]) -> str:
  """Flax module path (without the leaf name) -> official module prefix."""
  head = path[0]
  for pat, rep in _TOP:
    if pat.fullmatch(head):
      out = [pat.sub(rep, head)]
      break
  else:
    raise ValueError(f"unknown dgmjax NVAE module {'/'.join(path)!r}")
  parent = None
  for seg in path[1:]:
    m = re.fullmatch(r"ops_(\d+)", seg)
    if m:
      out.append(f"_ops.{m.group(1)}")
    elif re.fullmatch(r"se_(\d+)", seg):
      out.append(f"se.{seg[3:]}")
    elif parent == "skip" and seg == "conv":
      out.append("1")
    elif seg in _INVERTED and parent and parent.startswith("ops_"):
      idx, suffix = _INVERTED[seg]
      idx += 1 if head in up_cells else 0
      out.append(f"conv.{idx}" + (f".{suffix}" if suffix else ""))
    elif parent in ("expand", "depthwise") and seg in ("conv", "bn"):
      out.append("conv.0" if seg == "conv" else "conv.1")
    elif re.fullmatch(r"convz_(\d+)", seg):
      out.append(f"convz.{seg[6:]}")
    else:
      out.append(seg)
    parent = seg
  return ".".join(out)


def _up_cells(params) -> set[str]:
  """Top-level cells whose skip is the up-sampling one (``skip/conv``)."""
  return {k for k, v in params.items()
          if hasattr(v, "items") and "skip" in v and "conv" in v["skip"]}


def convert_state_dict(state_dict: Mapping[str, Any], abstract_variables: Mapping[str, Any]):
  """Official ``state_dict`` -> per-layer {"params", "batch_stats"} shaped like
  ``abstract_variables`` (``nvae_layout.per_layer_shapes(model)``); strict, see the module
  docstring. ``load_nvae`` stacks the result into the model's layout."""
  sd = StateDict(state_dict)
  params = traverse_util.flatten_dict(_plain(abstract_variables["params"]))
  stats = traverse_util.flatten_dict(_plain(abstract_variables.get("batch_stats", {})))
  up = _up_cells(_plain(abstract_variables["params"]))
  out_p, out_s = {}, {}

  def module_leaves(flat):
    mods: dict = {}
    for path in flat:
      mods.setdefault(path[:-1], []).append(path[-1])
    return mods

  bn_modules = set()
  for mod, leaves in module_leaves(params).items():
    if mod == ():
      for leaf in leaves:
        if leaf != "prior_ftr0":
          raise ValueError(f"unknown top-level dgmjax NVAE parameter {leaf!r}")
        h, w, c = params[("prior_ftr0",)].shape
        out_p[("prior_ftr0",)] = np.transpose(sd.take("prior_ftr0", (c, h, w)), (1, 2, 0))
      continue
    pre = _torch_prefix(mod, up)
    get = lambda leaf: params[mod + (leaf,)].shape
    if "scale" in leaves:                                        # BatchNorm
      c = get("scale")[0]
      out_p[mod + ("scale",)] = sd.take(f"{pre}.weight", (c,))
      out_p[mod + ("bias",)] = sd.take(f"{pre}.bias", (c,))
      bn_modules.add(mod)
      continue
    if "kernel" not in leaves:
      raise ValueError(f"unknown dgmjax NVAE module {'/'.join(mod)} with leaves {sorted(leaves)}")
    kernel = get("kernel")
    if len(kernel) == 2:                                         # Dense (SE)
      i, o = kernel
      out_p[mod + ("kernel",)] = sd.take(f"{pre}.weight", (o, i)).T
      out_p[mod + ("bias",)] = sd.take(f"{pre}.bias", (o,))
      continue
    kh, kw, i, o = kernel                                        # convolution
    w = sd.take(f"{pre}.weight", (o, i, kh, kw))
    out_p[mod + ("kernel",)] = torch_conv_to_flax(w)
    if "bias" in leaves:
      out_p[mod + ("bias",)] = sd.take(f"{pre}.bias", (o,))
    alias = f"{pre}.weight_normalized"
    if "log_weight_norm" in leaves:
      out_p[mod + ("log_weight_norm",)] = sd.take(f"{pre}.log_weight_norm", (o, 1, 1, 1)).reshape(o)
      if alias in sd:                                            # a derived tensor
        sd.take(alias, (o, i, kh, kw))
    elif alias in sd:
      if not np.array_equal(sd.take(alias, (o, i, kh, kw)), w):
        raise ValueError(f"key {alias!r} differs from {pre}.weight (it must alias it)")
    unknown = set(leaves) - {"kernel", "bias", "log_weight_norm"}
    if unknown:
      raise ValueError(f"unknown leaves {sorted(unknown)} in dgmjax module {'/'.join(mod)}")
  for mod, leaves in module_leaves(stats).items():
    if mod not in bn_modules or set(leaves) != {"mean", "var"}:
      raise ValueError(f"unexpected batch_stats entry {'/'.join(mod)}: {sorted(leaves)}")
    pre = _torch_prefix(mod, up)
    c = stats[mod + ("mean",)].shape[0]
    out_s[mod + ("mean",)] = sd.take(f"{pre}.running_mean", (c,))
    out_s[mod + ("var",)] = sd.take(f"{pre}.running_var", (c,))
    if f"{pre}.num_batches_tracked" in sd:
      sd.skip(f"{pre}.num_batches_tracked")
  missing_stats = bn_modules - set(module_leaves(stats))
  if missing_stats:
    raise ValueError(f"dgmjax BN modules without batch_stats: {sorted(missing_stats)[:5]}")
  sd.finish()
  for flat, ref in ((out_p, params), (out_s, stats)):
    for path, arr in flat.items():
      flat[path] = jnp.asarray(np.asarray(arr, np.float32))
      if tuple(flat[path].shape) != tuple(ref[path].shape):  # a bug here, not in the file
        raise ValueError(f"converted {'/'.join(path)} has shape {flat[path].shape}, "
                         f"expected {ref[path].shape}")
  return {"params": traverse_util.unflatten_dict(out_p),
          "batch_stats": traverse_util.unflatten_dict(out_s)}


def _plain(tree):
  """FrozenDict / ShapeDtypeStruct trees -> nested dicts."""
  if hasattr(tree, "items"):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def _ar_mask(path: tuple[str, ...], kernel_shape) -> np.ndarray | None:
  """HWIO mask of an IAF convolution (``nf_cells_i/cell{1,2}/...``), else None."""
  if not path[0].startswith("nf_cells_"):
    return None
  from dgmjax.nvae.iaf import ar_conv_mask
  mirror = path[1] == "cell2"
  kh, _, i, o = kernel_shape
  if path[-1] == "convz_0":
    return ar_conv_mask(kh, i, 1, o, True, mirror)
  if path[-1] == "convz_2":
    return ar_conv_mask(kh, o, o, o, False, mirror)
  if path[-2:] == ("mu", "conv_0"):
    return ar_conv_mask(kh, i, 1, o, False, mirror)
  raise ValueError(f"unknown IAF convolution {'/'.join(path)}")


def spectral_weights(params) -> dict[str, np.ndarray]:
  """Effective kernels of every convolution as [O, I*kh*kw] matrices (PyTorch's
  ``weight.view(O, -1)`` order), stacked by shape: {"RxC": [N,R,C]}, members ordered by
  module path as ``dgmjax.nvae.regularizers.group_weights`` orders the sown kernels."""
  from dgmjax.nvae.regularizers import group_key
  flat = traverse_util.flatten_dict(_plain(params))
  groups: dict[str, list] = {}
  for path in sorted(p[:-1] for p in flat if p[-1] == "kernel"):
    k = np.asarray(flat[path + ("kernel",)], np.float64)
    if k.ndim != 4:
      continue
    mask = _ar_mask(path, k.shape)
    if mask is not None:
      k = k * mask
    if path + ("log_weight_norm",) in flat:
      lwn = np.asarray(flat[path + ("log_weight_norm",)], np.float64)
      k = np.exp(lwn) * k / (np.sqrt(np.sum(k * k, axis=(0, 1, 2))) + 1e-5)
    m = np.transpose(k, (3, 2, 0, 1)).reshape(k.shape[3], -1)
    groups.setdefault(group_key(m.shape), []).append(m)
  return {key: np.stack(ms) for key, ms in groups.items()}


def spectral_state(params, seed: int = 0, num_iter: int = 40) -> dict:
  """{"RxC": {"u": [N,R], "v": [N,C]}} for the kernels of ``params``: normalised Gaussian
  vectors then ``num_iter`` power iterations (v <- u^T W / |.|, u <- W v / |.|, norms
  floored at 1e-3 as official), in numpy: no compilation at load time."""
  from dgmjax.nvae.regularizers import NORMALIZE_EPS
  unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), NORMALIZE_EPS)
  rs = np.random.default_rng(seed)
  state = {}
  for key, w in sorted(spectral_weights(params).items()):
    n, r, c = w.shape
    u, v = unit(rs.standard_normal((n, r))), unit(rs.standard_normal((n, c)))
    for _ in range(num_iter):
      v = unit(np.einsum("nr,nrc->nc", u, w))
      u = unit(np.einsum("nrc,nc->nr", w, v))
    state[key] = {"u": jnp.asarray(u, jnp.float32), "v": jnp.asarray(v, jnp.float32)}
  return state


def stack_groups(model, variables: dict) -> dict:
  """Variables in dgmjax's old per-layer NVAE layout -> the stacked layout ``model`` runs.

  ``model``: the ``NVAEModel`` the variables were made for (same hyper-parameters);
  ``variables``: {"params", "batch_stats", "spectral", optionally
  "readjusted_batch_stats"} with one module per cell (``enc_tower_i``, ``dec_tower_i``,
  ``enc_sampler_j``, ``dec_sampler_j``, ``nf_cells_k``: the names before the stacked
  layout, also the official ones). Returns the same model's variables with each scale's
  groups stacked (``dgmjax.convert.nvae_layout`` has the table); the spectral vectors'
  rows follow their kernels, so training continues bit for bit. Host-side (numpy).

      variables = dgmjax.convert.nvae.stack_groups(model, old_variables)
  """
  check_model(model, "nvae", "stack_groups")
  return nvae_layout.stack_variables(model, variables)


def load_nvae(path_or_checkpoint, model=None, *, seed: int = 0, **overrides):
  """Loads an official-layout NVAE checkpoint into dgmjax.

  Args:
    path_or_checkpoint: a ``.pt``/``.pth`` path or a loaded mapping, either the full
      checkpoint ``{"state_dict": ..., "args": Namespace, ...}`` or a bare state_dict
      (then ``model`` is required).
    model: a ``dgmjax.nvae.model.NVAEModel``; None builds it from the checkpoint's
      ``args`` (``hparams_from_args``, then ``overrides`` such as ``compute``).
    seed: seed of the spectral vectors' random start.

  Returns:
    ``(model, variables)`` when ``model`` is None, else ``variables``; variables =
    {"params", "batch_stats", "spectral"}.

  Raises:
    ValueError: unsafe or unreadable file, unsupported ``args``, or a missing,
    unexpected or mis-shaped key (named).
  """
  if model is not None:
    check_model(model, "nvae", "load_nvae")
  ckpt = load_checkpoint(path_or_checkpoint, state_dict_key="state_dict")
  if "state_dict" in ckpt and hasattr(ckpt["state_dict"], "items"):
    state_dict = ckpt["state_dict"]
    args = ckpt.get("args")
  else:
    state_dict, args = ckpt, None
  build = model is None
  if build:
    if args is None:
      raise ValueError("the checkpoint has no 'args'; pass model= to load a bare state_dict")
    from dgmjax import models
    model = models.create("nvae", **{**hparams_from_args(args), **overrides})
  elif overrides:
    raise ValueError(f"overrides {sorted(overrides)} apply only when model is None")
  # The official layout is the per-layer one: convert onto the per-layer tree of the
  # model's shapes, then stack each scale's groups.
  abstract = nvae_layout.abstract_variables(model)
  variables = convert_state_dict({k: to_numpy(v) for k, v in state_dict.items()},
                                 nvae_layout.per_layer_shapes(model, abstract))
  variables["spectral"] = spectral_state(variables["params"], seed,
                                         10 * max(model.num_power_iter, 1))
  variables = nvae_layout.stack_variables(model, variables)
  got = jax.tree_util.tree_map(np.shape, variables["spectral"])
  if got != jax.tree_util.tree_map(lambda a: tuple(a.shape), _plain(abstract["spectral"])):
    raise ValueError("the spectral groups of the loaded kernels differ from the model's; "
                     "dgmjax.convert.nvae.spectral_weights is out of date")
  variables = {c: jax.tree_util.tree_map(jnp.asarray, t) for c, t in variables.items()}
  return (model, variables) if build else variables
