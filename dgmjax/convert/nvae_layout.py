"""NVAE's per-layer layout (the official module order, and dgmjax's before the stacked
layout) mapped onto the stacked layout of ``dgmjax.nvae`` (``hierarchy.py`` docstring).

The per-layer layout keeps one module per cell under the official names (``enc_tower_i``,
``dec_tower_i``, ``enc_sampler_j``, ``dec_sampler_j``, ``nf_cells_k``); the model stacks
the repeated groups of each scale (``groups.py``). With G groups, decoder order
j = 0..G-1, decoder scale t (coarsest first) holding groups j = j_t .. j_t + n_t - 1
(group 0 excluded at t = 0), and the position of group j inside its scale's stack
p = j - j_t:

    per-layer                              stacked (leading axis [n_t], index p)
    enc_tower_i (cell c of enc. group g)   enc_groups_s/cells_c           [g]
    enc_tower_i (down cell of scale s)     enc_down_s
    enc_tower_i (combiner of group j)      dec_groups_t/enc_combiner      [p]
    dec_tower_i (combiner of group 0)      dec_top
    dec_tower_i (cell c of group j)        dec_groups_t/cells_c           [p]
    dec_tower_i (combiner of group j)      dec_groups_t/dec_combiner      [p]
    dec_tower_i (up cell after scale t)    dec_up_t
    enc_sampler_j, dec_sampler_{j-1}       dec_groups_t/enc_sampler, dec_sampler  [p]
    nf_cells_{j*F+k} (F = num_flows)       dec_groups_t/flows_k           [p]

(encoder scale s = S-1-t, encoder group g = g_s-1-p: the encoder runs finest first).
Everything else (stem, pre/post-processing, enc0, enc_sampler_0, nf_cells_k for group
0, image_conditional, prior_ftr0) keeps its name. ``params``, ``batch_stats`` and
``readjusted_batch_stats`` convert exactly; the spectral power-iteration vectors
(``spectral``, one row per kernel in the order of the sown kernels) are permuted to the
stacked layout's kernel order, so a converted run continues bit for bit. The conversion
works on the host: moved arrays come back as numpy arrays (one copy of the variables).
``dgmjax.convert.nvae.stack_groups`` is the public entry point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from dgmjax.nn.stacking import stack_trees
from dgmjax.nvae.regularizers import group_key

TREES = ("params", "batch_stats", "readjusted_batch_stats")
_STACKED_TOP = ("enc_groups_", "enc_down_", "dec_groups_", "dec_up_", "dec_top")


def layout_map(groups, cells_per_group: int, num_flows: int) -> dict[str, tuple]:
  """{per-layer top-level name: (stacked path tuple, stack index or None)} for every
  module that moves (module docstring); ``groups`` per encoder scale, finest first."""
  n = len(groups)
  dec_counts = [groups[n - 1 - t] for t in range(n)]
  where, j = {}, 1                        # group j >= 1 -> (decoder scale t, position p)
  for t in range(n):
    for g in range(dec_counts[t]):
      if t or g:
        where[j] = (t, g - (1 if t == 0 else 0))
        j += 1
  out: dict[str, tuple] = {}
  i, combiners = 0, []
  for s, g_s in enumerate(groups):
    for g in range(g_s):
      for c in range(cells_per_group):
        out[f"enc_tower_{i}"] = ((f"enc_groups_{s}", f"cells_{c}"), g)
        i += 1
      if not (s == n - 1 and g == g_s - 1):
        combiners.append(i)
        i += 1
    if s < n - 1:
      out[f"enc_tower_{i}"] = ((f"enc_down_{s}",), None)
      i += 1
  for k, idx in enumerate(combiners[::-1]):
    t, p = where[k + 1]
    out[f"enc_tower_{idx}"] = ((f"dec_groups_{t}", "enc_combiner"), p)
  i, j = 0, 0
  for t in range(n):
    for g in range(dec_counts[t]):
      if t or g:
        j += 1
        tt, p = where[j]
        for c in range(cells_per_group):
          out[f"dec_tower_{i}"] = ((f"dec_groups_{tt}", f"cells_{c}"), p)
          i += 1
        out[f"dec_tower_{i}"] = ((f"dec_groups_{tt}", "dec_combiner"), p)
      else:
        out[f"dec_tower_{i}"] = (("dec_top",), None)
      i += 1
    if t < n - 1:
      out[f"dec_tower_{i}"] = ((f"dec_up_{t}",), None)
      i += 1
  for jj, (t, p) in where.items():
    out[f"enc_sampler_{jj}"] = ((f"dec_groups_{t}", "enc_sampler"), p)
    out[f"dec_sampler_{jj - 1}"] = ((f"dec_groups_{t}", "dec_sampler"), p)
    for k in range(num_flows):
      out[f"nf_cells_{jj * num_flows + k}"] = ((f"dec_groups_{t}", f"flows_{k}"), p)
  return out


def map_of(model) -> dict[str, tuple]:
  """``layout_map`` of an ``NVAEModel``."""
  return layout_map(model.groups, model.cells_per_group, model.num_flows)


def _get(tree, path):
  for k in path:
    if not hasattr(tree, "items") or k not in tree:
      return None
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _stack_tree(tree, mapping):
  out, buckets = {}, {}
  for name, sub in tree.items():
    if name not in mapping:
      out[name] = sub
      continue
    path, pos = mapping[name]
    if pos is None:
      _set(out, path, sub)
    else:
      buckets.setdefault(path, {})[pos] = sub
  for path, members in buckets.items():
    if sorted(members) != list(range(len(members))):
      raise ValueError(f"groups of {'/'.join(path)} missing: have positions {sorted(members)}")
    _set(out, path, stack_trees([members[p] for p in range(len(members))], xp=np))
  return out


def _per_layer_shapes(tree, mapping):
  out = {k: v for k, v in tree.items() if not k.startswith(_STACKED_TOP)}
  for name, (path, pos) in mapping.items():
    sub = _get(tree, path)
    if sub is not None:
      out[name] = sub if pos is None else jax.tree_util.tree_map(
          lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), sub)
  return out


def abstract_variables(model) -> dict:
  """The shapes of ``model.init``'s variables (``jax.eval_shape``: nothing computed)."""
  x = jnp.zeros((1,) + tuple(model.image_shape), jnp.uint8)
  return jax.eval_shape(lambda r: model.init(r, x), jax.random.PRNGKey(0))


def per_layer_shapes(model, abstract=None) -> dict:
  """{"params", "batch_stats"} of ``model`` as ``jax.ShapeDtypeStruct`` trees in the
  per-layer (official) layout: what ``convert_state_dict`` maps a state_dict onto."""
  abstract = abstract_variables(model) if abstract is None else abstract
  return {c: _per_layer_shapes(unfreeze(abstract[c]), map_of(model))
          for c in ("params", "batch_stats")}


def spectral_order(params, mapping=None) -> dict[str, list]:
  """{"RxC": [kernel id]} the convolutions of ``params`` in the order the model sows
  them (sorted module paths; a stacked kernel [N,...] gives N members in turn): the row
  order of the ``spectral`` state. Kernel ids are per-layer module paths, so the orders
  of the two layouts of one model can be matched (``mapping``: ``layout_map`` when
  ``params`` is stacked)."""
  reverse = {(path, pos): name for name, (path, pos) in (mapping or {}).items()}
  flat = traverse_util.flatten_dict(unfreeze(params))
  order: dict[str, list] = {}
  for path in sorted(p[:-1] for p in flat if p[-1] == "kernel"):
    shape = flat[path + ("kernel",)].shape
    stacked = len(shape) == 5
    if len(shape) != 4 and not stacked:
      continue                                  # dense (SE) kernels are not sown
    kh, kw, i, o = shape[-4:]
    for m in range(shape[0] if stacked else 1):
      ident = path
      if mapping:
        for cut in range(len(path), 0, -1):
          key = (path[:cut], m if stacked else None)
          if key in reverse:
            ident = (reverse[key],) + path[cut:]
            break
      order.setdefault(group_key((o, i * kh * kw)), []).append(ident)
  return order


def _permute_spectral(spectral, params_from, map_from, params_to, map_to):
  src, dst = spectral_order(params_from, map_from), spectral_order(params_to, map_to)
  if set(src) != set(spectral) or any(sorted(src[k]) != sorted(dst[k]) for k in src):
    raise ValueError("the spectral state does not match the model's kernels")
  out = {}
  for k, members in dst.items():
    rows = np.asarray([src[k].index(m) for m in members])
    out[k] = {a: np.asarray(spectral[k][a])[rows] for a in ("u", "v")}
  return out


def stack_variables(model, variables: dict) -> dict:
  """Per-layer variables of ``model`` -> its stacked layout (module docstring)."""
  mapping = map_of(model)
  if not any(name in variables.get("params", {}) for name in mapping):
    raise ValueError("the variables are not in the per-layer NVAE layout (no enc_tower_i / "
                     "dec_tower_i modules)")
  out = {c: _stack_tree(unfreeze(t), mapping) if c in TREES else t
         for c, t in variables.items()}
  if "spectral" in variables:
    out["spectral"] = _permute_spectral(variables["spectral"], variables["params"], None,
                                        out["params"], mapping)
  return out
