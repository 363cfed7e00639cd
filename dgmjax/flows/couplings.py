"""Glow's coupling layer (Kingma & Dhariwal 2018, section 3.3; NICE for additive), a
bijector on images [B,H,W,C] that takes its conditioner network as an argument, as
distrax's ``MaskedCoupling`` takes ``conditioner``:

    x = [x_a, x_b] (channel halves),  h = NN(x_a),  y = [x_a, f(x_b; h)]

The coupling owns the split and merge, the elementwise transform f and its log-det
(``coupling_transform``); the conditioner NN is any Flax module mapping x_a
[B,H,W,C/2] to h [B,H,W,F] (Glow's is ``dgmjax.flows.conditioners.CouplingNet``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgmjax.flows.bijectors import Bijector, check_nhwc
from dgmjax.flows.conditioners import CouplingNet
from dgmjax.nn.compute import DEFAULT, Compute


def coupling_transform(xb, h, affine: bool, inverse: bool = False):
  """The elementwise part of ``Coupling`` given the conditioner's output h = NN(x_a).

  affine:   [log_s', t] = h (first half, second half), s = sigmoid(log_s' + 2),
            y_b = (x_b + t) * s,  inverse x_b = y_b / s - t,  log_det = sum log s.
  additive: y_b = x_b + h,        inverse x_b = y_b - h,      log_det = 0.

  xb: [B,H,W,C/2]; h: float32 [B,H,W,C] (affine) or [B,H,W,C/2] (additive).
  Returns (y_b, log_det[B]) (inverse: (x_b, -log_det)); used by ``Coupling`` and by the
  reversible backward pass (``dgmjax.flows.reversible``), so both compute the same maths.
  """
  if not affine:
    return (xb - h if inverse else xb + h), jnp.zeros((xb.shape[0],), jnp.float32)
  half = xb.shape[-1]
  pre, t = h[..., :half], h[..., half:]
  s = jax.nn.sigmoid(pre + 2.0)
  log_det = jnp.sum(jax.nn.log_sigmoid(pre + 2.0), axis=(1, 2, 3))
  if inverse:
    return xb / s - t, -log_det
  return (xb + t) * s, log_det


class Coupling(Bijector):
  """Affine or additive coupling: y = [x_a, f(x_b; NN(x_a))] (see ``coupling_transform``).

  ``conditioner``: the network NN, a Flax module template x_a [B,H,W,C/2] -> h; the
  coupling binds a copy of it as its submodule ``net`` (so its parameters live under
  ``net`` wherever the template was built) and, when the template has a ``features``
  field left None, sets it to the channels the transform needs: C for affine
  ([log_s', t]), C/2 for additive. Without a conditioner the coupling uses Glow's
  ``CouplingNet(width, net_actnorm=net_actnorm, edge_bias=edge_bias, compute=compute)``;
  ``width``, ``net_actnorm``, ``edge_bias`` and ``compute`` (``dgmjax.nn.compute``) only
  configure that default.

  Glow's network ends in a zero-initialised convolution, so a fresh additive coupling
  is the identity (and a fresh affine one scales x_b by sigmoid(2)).
  """
  width: int = 512
  affine: bool = True
  net_actnorm: bool = False
  edge_bias: bool = False
  compute: Compute = DEFAULT
  conditioner: nn.Module | None = None

  def _template(self) -> nn.Module:
    if self.conditioner is not None:
      return self.conditioner
    return CouplingNet(self.width, None, self.net_actnorm, self.edge_bias, self.compute,
                       parent=None)

  @nn.compact
  def __call__(self, x, inverse=False):
    template = self._template()
    known = None
    if self.has_variable("params", "net") and hasattr(template, "input_channels"):
      known = 2 * template.input_channels(self.get_variable("params", "net"))
    _, _, _, c = check_nhwc(x, "Coupling", known, even_channels=True)
    half = c // 2
    features = c if self.affine else half
    updates = {}
    if getattr(template, "features", features) is None:
      updates["features"] = features
    net = template.clone(parent=self, name="net", **updates)
    xa, xb = x[..., :half], x[..., half:]
    h = net(xa)
    if h.shape != xb.shape[:-1] + (features,):
      raise ValueError(f"Coupling's conditioner must map x_a {tuple(xa.shape)} to shape "
                       f"[B,H,W,{features}] ({'affine' if self.affine else 'additive'}); "
                       f"got {tuple(h.shape)}")
    yb, log_det = coupling_transform(xb, h, self.affine, inverse)
    return jnp.concatenate([xa, yb.astype(x.dtype)], -1), log_det
