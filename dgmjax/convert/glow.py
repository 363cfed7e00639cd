"""Import rosinality/glow-pytorch Glow weights (and the project's PyTorch baseline,
``experiments/pytorch/glow.py``, which shares its layout) into dgmjax ``GlowModel``
variables.

Mapping (PyTorch NCHW/OIHW -> dgmjax NHWC/HWIO), block i < L, step k < K. dgmjax keeps
a level's K steps stacked: "flows_k/X [shape]" below is row k of the array
``blocks_i/flows/X [K, *shape]`` (the per-step layout exists only here).

PyTorch key  ->  dgmjax variable:
- blocks.i.flows.k.actnorm.loc / .scale [1,C,1,1]
  -> params blocks_i/flows_k/actnorm/loc / scale [C]
- blocks.i.flows.k.actnorm.initialized
  -> checked to be 1, not stored
- blocks.i.flows.k.invconv.w_l / w_u [C,C], w_s [C]
  -> params blocks_i/flows_k/invconv/w_l / w_u / w_s
- blocks.i.flows.k.invconv.w_p [C,C], s_sign [C]
  -> constants blocks_i/flows_k/invconv/w_p / s_sign
- blocks.i.flows.k.invconv.u_mask/l_mask/l_eye
  -> recomputed (shape-checked, not stored)
- blocks.i.flows.k.coupling.net.0.weight/bias
  -> params .../coupling/net/conv1/kernel [3,3,C/2,W] / bias
- blocks.i.flows.k.coupling.net.2.weight/bias
  -> params .../coupling/net/conv2/kernel [W,W] (1x1 as Dense) / bias
- blocks.i.flows.k.coupling.net.4.conv.weight/bias, .scale
  -> params .../coupling/net/zero_conv/kernel, bias, logs [Cout]
- blocks.i.prior.conv.weight/bias, .scale (i < L-1)
  -> params blocks_i/prior/conv/kernel, bias, logs
- blocks.{L-1}.prior.conv.weight/bias, .scale
  -> params top_prior/conv/kernel, bias, logs

The model must have the architecture that checkpoint has: ``permutation="lu"``,
``net_actnorm=False``, ``logscale_factor=None``, ``edge_bias=False``,
``learn_top=True``, ``num_classes=None``; ``coupling``, ``levels`` (n_block), ``steps``
(n_flow) and ``width`` (filter_size) as trained; any ``compute``. Every key is consumed
with its expected shape; a missing, unexpected or mis-shaped key is a ValueError naming it.

``stack_steps(variables)`` converts variables saved by earlier dgmjax versions in their
per-step layouts (``blocks_i/flows_k/...``, or ``blocks_i/flows/scan/step/...`` from
``scan=True``) to today's stacked one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.convert.common import StateDict, check_model, load_checkpoint, torch_conv_to_flax
from dgmjax.nn.stacking import stack_trees


def stack_steps(variables: dict) -> dict:
  """Variables in dgmjax's former per-step Glow layouts -> today's stacked layout.

  ``blocks_i/flows_k/...`` (one subtree per step, the former default) become
  ``blocks_i/flows/...`` with a leading [K] axis (step k at row k); the former
  ``scan=True`` layout ``blocks_i/flows/scan/step/...`` (already stacked) is re-nested to
  ``blocks_i/flows/...``. Every collection (``params``, ``constants``) is converted;
  anything else (priors, ``top_prior``) is kept. Variables already in today's layout are
  returned unchanged. Same model, same outputs::

      variables = dgmjax.convert.glow.stack_steps(old_variables)
  """
  out = {}
  for col, tree in variables.items():
    out[col] = {}
    for name, sub in tree.items():
      if not (name.startswith("blocks_") and isinstance(sub, dict)):
        out[col][name] = sub
        continue
      keys = sorted((k for k in sub if k.startswith("flows_")), key=lambda k: int(k[6:]))
      rest = {k: v for k, v in sub.items() if not k.startswith("flows_")}
      if keys:
        rest["flows"] = stack_trees([sub[k] for k in keys], xp=np)
      elif isinstance(sub.get("flows"), dict) and "scan" in sub["flows"]:
        rest["flows"] = sub["flows"]["scan"]["step"]
      out[col][name] = rest
  return out


def _check_model(model) -> None:
  check_model(model, "glow", "load_glow")
  need = dict(permutation="lu", net_actnorm=False, logscale_factor=None, edge_bias=False,
              learn_top=True, num_classes=None)
  bad = {k: getattr(model, k) for k, v in need.items() if getattr(model, k) != v}
  if bad:
    raise ValueError(f"rosinality/glow-pytorch checkpoints need a GlowModel with {need}; "
                     f"this model has {bad}")


def _vec(sd: StateDict, key: str, c: int) -> np.ndarray:
  return sd.take(key, (1, c, 1, 1)).reshape(c)


def _zero_conv(sd: StateDict, prefix: str, cin: int, cout: int) -> dict:
  return {"kernel": torch_conv_to_flax(sd.take(f"{prefix}.conv.weight", (cout, cin, 3, 3))),
          "bias": sd.take(f"{prefix}.conv.bias", (cout,)),
          "logs": _vec(sd, f"{prefix}.scale", cout)}


def load_glow(path_or_state_dict, model) -> dict:
  """A rosinality-layout state_dict (``.pt`` path or mapping) -> GlowModel variables.

  Returns ``{"params": ..., "constants": ...}`` with float32 arrays, checked against
  the structure and shapes ``model.init`` produces.
  """
  _check_model(model)
  sd = StateDict(load_checkpoint(path_or_state_dict))
  h, w, c_img = model.image_shape
  width, half_out = model.width, model.coupling == "affine"
  params, consts = {}, {}
  c = c_img
  for i in range(model.levels):
    cs = 4 * c  # channels inside the level
    bp, bc, steps_p, steps_c = {}, {}, [], []
    for k in range(model.steps):
      pre = f"blocks.{i}.flows.{k}"
      init = sd.take(f"{pre}.actnorm.initialized", ())
      if int(init) != 1:
        raise ValueError(f"{pre}.actnorm.initialized is {int(init)}: this checkpoint's ActNorm "
                         f"was never initialised from data; refusing to load its loc/scale")
      for buf in ("u_mask", "l_mask", "l_eye"):
        sd.take(f"{pre}.invconv.{buf}", (cs, cs))
      cout = cs if half_out else cs // 2
      steps_p.append({
          "actnorm": {"loc": _vec(sd, f"{pre}.actnorm.loc", cs),
                      "scale": _vec(sd, f"{pre}.actnorm.scale", cs)},
          "invconv": {"w_l": sd.take(f"{pre}.invconv.w_l", (cs, cs)),
                      "w_u": sd.take(f"{pre}.invconv.w_u", (cs, cs)),
                      "w_s": sd.take(f"{pre}.invconv.w_s", (cs,))},
          "coupling": {"net": {
              "conv1": {"kernel": torch_conv_to_flax(
                            sd.take(f"{pre}.coupling.net.0.weight", (width, cs // 2, 3, 3))),
                        "bias": sd.take(f"{pre}.coupling.net.0.bias", (width,))},
              "conv2": {"kernel": sd.take(f"{pre}.coupling.net.2.weight",
                                          (width, width, 1, 1))[:, :, 0, 0].T,
                        "bias": sd.take(f"{pre}.coupling.net.2.bias", (width,))},
              "zero_conv": _zero_conv(sd, f"{pre}.coupling.net.4", width, cout)}}})
      steps_c.append({"invconv": {"w_p": sd.take(f"{pre}.invconv.w_p", (cs, cs)),
                                  "s_sign": sd.take(f"{pre}.invconv.s_sign", (cs,))}})
    bp["flows"], bc["flows"] = stack_trees(steps_p, xp=np), stack_trees(steps_c, xp=np)
    if i < model.levels - 1:
      bp["prior"] = {"conv": _zero_conv(sd, f"blocks.{i}.prior", cs // 2, cs)}
      c = cs // 2
    else:
      params["top_prior"] = {"conv": _zero_conv(sd, f"blocks.{i}.prior", cs, 2 * cs)}
    params[f"blocks_{i}"], consts[f"blocks_{i}"] = bp, bc
  sd.finish()
  variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32),
                                     {"params": params, "constants": consts})
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1,) + model.image_shape, jnp.uint8))
  got_s = jax.tree_util.tree_map(lambda a: a.shape, variables)
  want_s = jax.tree_util.tree_map(lambda a: a.shape, dict(expected))
  if got_s != want_s:
    raise ValueError("converted variables do not match the model's structure: "
                     f"{jax.tree_util.tree_structure(got_s)} vs "
                     f"{jax.tree_util.tree_structure(want_s)}")
  return variables
