"""pytorch-fid's Inception weights file -> ``dgmjax.fid.inception.FIDInception`` params.

The file is mseitzer/pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (TensorFlow's
2015 FID Inception graph ported to PyTorch): the state_dict of torchvision's
``Inception3`` (1008 classes, no auxiliary head) with the FID blocks. It is read like
every official file (``common.load_checkpoint``: ``torch.load(weights_only=True)``, zip
CRC checked) and consumed key by key: each ``BasicConv2d`` named N gives ``N.conv.weight``
(OIHW -> HWIO), ``N.bn.weight``/``bias``/``running_mean``/``running_var``; the classifier
``fc.*`` and the BN step counters are not used by the pool3 features and are skipped.
A missing, unexpected or mis-shaped key is an error naming it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dgmjax.convert.common import StateDict, load_checkpoint, torch_conv_to_flax
from dgmjax.fid.inception import FIDInception

_BN = {"scale": "bn.weight", "bias": "bn.bias", "mean": "bn.running_mean",
       "var": "bn.running_var"}


def param_shapes() -> dict:
  """The params tree of ``FIDInception`` as shapes (no weights drawn)."""
  x = jnp.zeros((1, 75, 75, 3), jnp.float32)
  tree = jax.eval_shape(lambda r: FIDInception().init(r, x), jax.random.key(0))["params"]
  return jax.tree_util.tree_map(lambda s: tuple(s.shape), tree)


def load_inception(path_or_state_dict) -> dict:
  """The FID Inception's params (float32 numpy arrays) from pytorch-fid's weights file
  (or its loaded state_dict). ValueError naming the key for any mismatch."""
  sd = StateDict(load_checkpoint(path_or_state_dict),
                 ignore=("num_batches_tracked",))
  for key in ("fc.weight", "fc.bias"):
    if key in sd:
      sd.skip(key)

  def convert(path, shape):
    names = [p.key for p in path]
    module, leaf = ".".join(names[:-1]), names[-1]
    if leaf == "kernel":
      kh, kw, i, o = shape
      return torch_conv_to_flax(sd.take(f"{module}.conv.weight", (o, i, kh, kw)))
    return sd.take(f"{module}.{_BN[leaf]}", shape)

  params = jax.tree_util.tree_map_with_path(convert, param_shapes(),
                                            is_leaf=lambda s: isinstance(s, tuple))
  sd.finish()
  return jax.tree_util.tree_map(lambda a: a.astype("float32"), params)
