"""Import ajayjain/lmconv ``OurPixelCNN`` weights (and the project's PyTorch baseline,
``experiments/pytorch/lmconv.py``, which shares its layout) into dgmjax ``LMConvModel``
variables.

Mapping (PyTorch OIHW / [out, in] -> dgmjax HWIO / [in, out]); i < 3, j < resnets
(resnets + 1 for ``down_layers.1/2``):

PyTorch key  ->  dgmjax ``params``:
- u_init.weight [F,C+1,k,k], .bias
  -> u_init/kernel [k,k,C+1,F], bias
- up_layers.i.u_stream.j.conv_input / conv_out .weight, .bias
  -> up_layers_i/u_stream/conv_input / conv_out/kernel[j], bias[j]
- down_layers.i.u_stream.j.conv_input / conv_out
  -> down_layers_i/u_stream/conv_input / conv_out (slice j)
- down_layers.i.u_stream.j.nin_skip.lin_a.weight_v [F,2F]
  -> .../nin_skip/kernel[j] [2F,F] (transposed)
- down_layers.i.u_stream.j.nin_skip.lin_a.weight_g [F,1]
  -> .../nin_skip/scale[j] [F]
- down_layers.i.u_stream.j.nin_skip.lin_a.bias
  -> .../nin_skip/bias[j]
- downsize_u_stream.i / upsize_u_stream.i .weight, .bias
  -> downsize_u_stream_i / upsize_u_stream_i/kernel, bias
- nin_out.lin_a.weight_v [n_out,F], .weight_g [n_out,1], .bias
  -> nin_out/kernel [F,n_out], scale, bias

With ``--normalization weight_norm`` a masked conv stores ``weight_g`` [O,1,1,1] and
``weight_v`` instead of ``weight`` (-> ``scale`` [O], ``kernel``); with
``--learn_weight_for_masks`` it also stores ``mask_weight`` [O,k,k] (-> [k,k,O]). With
PONO (the paper's setting) the masked convs carry no weight norm; the 1x1 ``nin`` layers
are always weight-normalised Linears. Masks are not stored: they are recomputed from the
orders.

The model must have the checkpoint's architecture (filters = ``nr_filters``, resnets =
``nr_resnet``, kernel_size, normalization, mask_weight, conv_bias, and the head: 10 M
outputs for RGB, 3 M greyscale, 2 for ``--binarize``). The per-resnet arrays of a
stream are stacked on a leading [num] axis under ``{up,down}_layers_i/u_stream/...`` (the
one dgmjax layout, ``dgmjax.lmconv.network``): slice j is the official ``u_stream.j``.
The expected tree is that of ``model.init``; every one of its leaves (every slice of a
stacked one) is taken from the state_dict with its expected shape, and any key left over
is an error, so a missing, unexpected or mis-shaped key is a ValueError naming it.

``stack_resnets`` converts variables saved by an earlier dgmjax in its per-resnet layout
(``u_stream_{j}``) to this one.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.convert.common import (StateDict, check_model, load_checkpoint,
                                   torch_conv_to_flax)
from dgmjax.nn.stacking import stack_trees

_INDEXED = ("up_layers", "down_layers", "u_stream", "downsize_u_stream", "upsize_u_stream")
_PLAIN = ("u_init", "conv_input", "conv_out")
_NIN = ("nin_skip", "nin_out")


def _torch_prefix(path: tuple[str, ...]) -> str:
  """dgmjax module path (e.g. ("down_layers_1", "u_stream_0", "nin_skip")) -> official
  module name ("down_layers.1.u_stream.0.nin_skip.lin_a")."""
  parts = []
  for name in path:
    m = re.fullmatch(r"(.+)_(\d+)", name)
    if m and m.group(1) in _INDEXED:
      parts.append(f"{m.group(1)}.{m.group(2)}")
    elif name in _NIN:
      parts.append(f"{name}.lin_a")
    elif name in _PLAIN:
      parts.append(name)
    else:
      raise ValueError(f"dgmjax parameter module {'/'.join(path)!r} has no official "
                       f"ajayjain/lmconv name")
  return ".".join(parts)


def _nin(sd: StateDict, prefix: str, leaves: Mapping[str, Any]) -> dict:
  cin, cout = leaves["kernel"].shape
  out = {"kernel": sd.take(f"{prefix}.weight_v", (cout, cin)).T,
         "scale": sd.take(f"{prefix}.weight_g", (cout, 1)).reshape(cout),
         "bias": sd.take(f"{prefix}.bias", (cout,))}
  if set(leaves) != set(out):
    raise ValueError(f"unexpected dgmjax nin parameters under {prefix}: {sorted(leaves)}")
  return out


def _masked_conv(sd: StateDict, prefix: str, leaves: Mapping[str, Any]) -> dict:
  k, _, cin, cout = leaves["kernel"].shape
  oihw = (cout, cin, k, k)
  out = {}
  if "scale" in leaves:
    out["kernel"] = torch_conv_to_flax(sd.take(f"{prefix}.weight_v", oihw))
    out["scale"] = sd.take(f"{prefix}.weight_g", (cout, 1, 1, 1)).reshape(cout)
  else:
    out["kernel"] = torch_conv_to_flax(sd.take(f"{prefix}.weight", oihw))
  if "bias" in leaves:
    out["bias"] = sd.take(f"{prefix}.bias", (cout,))
  if "mask_weight" in leaves:
    out["mask_weight"] = np.transpose(sd.take(f"{prefix}.mask_weight", (cout, k, k)), (1, 2, 0))
  if set(leaves) != set(out):
    raise ValueError(f"unexpected dgmjax conv parameters under {prefix}: {sorted(leaves)}")
  return out


def _convert(sd: StateDict, tree: Mapping[str, Any], path: tuple[str, ...]) -> dict:
  if path and path[-1] == "u_stream":   # a stream's resnets, stacked [num, ...]
    num = jax.tree_util.tree_leaves(tree)[0].shape[0]
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tree)
    return stack_trees([_convert(sd, one, path[:-1] + (f"u_stream_{j}",))
                        for j in range(num)], xp=np)
  if all(not isinstance(v, Mapping) for v in tree.values()):  # a layer's leaves
    prefix = _torch_prefix(path)
    if path[-1] in _NIN:
      return _nin(sd, prefix, tree)
    return _masked_conv(sd, prefix, tree)
  return {name: _convert(sd, sub, path + (name,)) for name, sub in tree.items()}


def _unwrap(obj: Mapping[str, Any], use_ema: bool) -> Mapping[str, Any]:
  """An official training checkpoint {"model_state_dict", "ema_state_dict", "args", ...}
  -> its (EMA) weights; a bare state_dict passes through; a DataParallel ``module.``
  prefix on every key is removed."""
  key = "ema_state_dict" if use_ema else "model_state_dict"
  if "model_state_dict" in obj:
    if key not in obj:
      raise ValueError(f"checkpoint has no {key!r}; its entries: {sorted(obj)}")
    obj = obj[key]
  elif use_ema:
    raise ValueError("use_ema=True needs an official training checkpoint with "
                     "'ema_state_dict'; got a bare state_dict")
  if obj and all(k.startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return obj


def load_lmconv(path_or_state_dict, model, *, use_ema: bool = False) -> dict:
  """An official-layout LMConv state_dict -> ``{"params": ...}`` for ``model``.

  Args:
    path_or_state_dict: a ``.pt``/``.pth`` path (read with ``torch.load(weights_only=
      True)``), a state_dict mapping, or an official training checkpoint (a dict holding
      ``model_state_dict``).
    model: the ``dgmjax.lmconv.model.LMConvModel`` the weights are for.
    use_ema: take ``ema_state_dict`` from an official training checkpoint.

  Returns:
    variables ``{"params": tree}`` of float32 arrays with exactly the structure and shapes
    of ``model.init``.

  Raises:
    ValueError: a missing, unexpected or mis-shaped key (named), or a checkpoint holding
      objects outside the allow-list.
  """
  check_model(model, "lmconv", "load_lmconv")
  raw = _unwrap(load_checkpoint(path_or_state_dict), use_ema)
  sd = StateDict(raw)
  x = np.zeros((1,) + tuple(model.image_shape), np.uint8)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  params = _convert(sd, abstract, ())
  sd.finish()
  return {"params": jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)}


# ---- variables of an earlier dgmjax (per-resnet layout) -> the stacked layout --------

_STREAM = re.compile(r"(up|down)_layers_\d+")
_RESNET = re.compile(r"u_stream_(\d+)")


def stack_resnets(variables: Mapping[str, Any]) -> dict:
  """Variables of an earlier dgmjax LMConv in its per-resnet layout -> today's layout.

  dgmjax before the stacked layout (``scan=False``, its default) saved each gated resnet
  under ``{up,down}_layers_i/u_stream_j/<leaf path>``; today each stream's resnets are one
  stack ``{up,down}_layers_i/u_stream/<leaf path>`` with leaves [num, *shape] (slice j =
  resnet j). This renames and stacks, in every collection, and keeps every other entry;
  variables already stacked pass through unchanged. Same model, same outputs:

      variables = dgmjax.convert.lmconv.stack_resnets(old_variables)

  ValueError if a stream's indices have gaps or a stream holds both forms.
  """
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      idx = sorted(int(m.group(1)) for m in map(_RESNET.fullmatch, sub) if m) \
          if _STREAM.fullmatch(name) and isinstance(sub, Mapping) else []
      if not idx:
        out[col][name] = sub
        continue
      if idx != list(range(len(idx))):
        raise ValueError(f"{col}/{name}: u_stream indices {idx} are not 0..{len(idx) - 1}")
      rest = {k: v for k, v in sub.items() if not _RESNET.fullmatch(k)}
      if "u_stream" in rest:
        raise ValueError(f"{col}/{name} holds both u_stream and u_stream_j entries")
      rest["u_stream"] = stack_trees([sub[f"u_stream_{j}"] for j in idx])
      out[col][name] = rest
  return out


# ---- official arguments -> create("lmconv") kwargs ----------------------------------

_ORDER_NAMES = {"raster_scan": "raster", "s_curve": "s_curve", "hilbert": "hilbert",
                "gilbert2d": "gilbert"}


def hparams_from_args(args) -> dict[str, Any]:
  """ajayjain/lmconv ``main.py`` arguments (the ``args`` dict its checkpoints store,
  ``vars(args)``; a Namespace works too) -> kwargs of ``dgmjax.models.create("lmconv",
  **kwargs)``, image_shape and num_bins included.

  dataset "mnist" -> (28, 28, 1) (``--binarize``: 2 levels, the 2-way softmax head),
  "cifar" -> (32, 32, 3), "celebahq" -> (celeba_size, celeba_size, 3), with
  ``2 ** n_bits`` levels; nr_filters, nr_resnet, nr_logistic_mix, kernel_size,
  max_dilation, normalization (pono | weight_norm | none), dropout_prob,
  learn_weight_for_masks, no_bias; ``--order NAME...`` with ``--randomize_order`` ->
  ("NAME:all", ...) (the 8 variants of each, ``augment_orders``), else ("NAME", ...).

  Raises ValueError for what dgmjax does not build: the PixelCNN++ baseline (no
  ``--ours``), ``order_rescale``, ``s_curve_center_quarter_last``, the base-order
  reflection flags, an unknown dataset.
  """
  if not isinstance(args, Mapping):
    args = vars(args)
  a = dict(args)

  def need(key):
    if key not in a:
      raise ValueError(f"LMConv checkpoint args lack {key!r}")
    return a[key]

  if "ours" in a and not a["ours"]:
    raise ValueError("the checkpoint is the PixelCNN++ baseline (no --ours); dgmjax imports "
                     "LMConv (OurPixelCNN) checkpoints only")
  dataset = str(need("dataset"))
  bits = int(a.get("n_bits", 8))
  binarize = bool(a.get("binarize", False))
  if "mnist" in dataset:
    shape, num_bins = (28, 28, 1), (2 if binarize else 2 ** bits)
  elif "cifar" in dataset:
    shape, num_bins = (32, 32, 3), 2 ** bits
  elif "celebahq" in dataset:
    s = int(a.get("celeba_size", 256))
    shape, num_bins = (s, s, 3), 2 ** bits
  else:
    raise ValueError(f"unsupported LMConv dataset {dataset!r}; expected mnist, cifar or celebahq")
  norm = a.get("normalization", "weight_norm")
  if norm not in ("pono", "weight_norm", "none"):
    raise ValueError(f"dgmjax LMConv builds normalization pono, weight_norm or none; the "
                     f"checkpoint has {norm!r}")
  for flag in ("base_order_reflect_rows", "base_order_reflect_cols", "base_order_transpose"):
    if a.get(flag):
      raise ValueError(f"the official flag --{flag} is not supported; pass the orders as "
                       f"permutations instead")
  names = need("order")
  names = [names] if isinstance(names, str) else list(names or [])
  if not names:
    raise ValueError("LMConv checkpoint args have no 'order'")
  specs = []
  for n in names:
    if n not in _ORDER_NAMES:
      raise ValueError(f"unsupported official order {n!r}; expected one of "
                       f"{sorted(_ORDER_NAMES)}")
    specs.append(f"{_ORDER_NAMES[n]}:all" if a.get("randomize_order") else _ORDER_NAMES[n])
  return dict(
      image_shape=shape, num_bins=num_bins, filters=int(a.get("nr_filters", 160)),
      resnets=int(a.get("nr_resnet", 5)), mixtures=int(a.get("nr_logistic_mix", 10)),
      kernel_size=int(a.get("kernel_size", 5)), max_dilation=int(a.get("max_dilation", 2)),
      orders=tuple(specs), normalization=norm, dropout=float(a.get("dropout_prob", 0.5)),
      head="auto", mask_weight=bool(a.get("learn_weight_for_masks", False)),
      conv_bias=not bool(a.get("no_bias", False)))
