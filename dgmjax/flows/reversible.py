"""Reversible backpropagation through Glow's steps of flow: activation memory O(1) in depth.

Every step of flow f_k = coupling o permutation o ActNorm is a bijection, so the backward
pass need not store its input: given the step's output y_k = x_{k+1} it rebuilds
x_k = f_k^{-1}(y_k) and recomputes the step's local forward to get its vector-Jacobian
product (the reversible residual network's algorithm, Gomez et al. 2017, "The Reversible
Residual Network: Backpropagation Without Storing Activations", Algorithm 1; for flows,
e.g. Behrmann et al. 2019, "Invertible Residual Networks", and the memory-saving request
openai/glow#37). ``reversible_steps`` runs the K steps of one Glow level through the
executor's reversible scan (``dgmjax.nn.repeat.reversible``, one ``jax.custom_vjp``) with
this module's ``step_forward`` and Glow's own ``step_backward``:

  forward   (y, log_det) = f_{K-1} o ... o f_0 (x) as a ``lax.scan`` over the stacked step
            parameters; the residuals kept for the backward pass are the parameters and
            y alone (not the K intermediate x_k).
  backward  a reversed ``lax.scan``: for k = K-1 .. 0, from (y_k, dL/dy_k, dL/dlog_det)
            rebuild x_k and return (x_k, dL/dx_k, dL/dtheta_k).

One backward step, with y = [y_a, y_b] (channel halves) and the coupling network NN:
  h, vjp_NN = jax.vjp(NN, theta_NN, y_a)   # y_a = p_a: the coupling copies its first half
  p_b       = y_b / s(h) - t(h)            # affine (additive: p_b = y_b - h)
  (dp_b, dh) = vjp of (p_b, h) -> (y_b, log_det) at the rebuilt p_b
  (dtheta_NN, dp_a) = vjp_NN(dh);  dp_a += dy_a
  x = ActNorm^-1(P^-1 [p_a, p_b]),  (dtheta_pre, dx) = vjp of (ActNorm, P) at x.
The network runs once forward (with its residuals) and once backward per step, as in
the standard backward pass; the extra cost over storing activations is one forward of
every coupling network plus the cheap ActNorm/1x1 inverses (time and memory:
``dgmjax bench glow --reversible --memory-vs-k cifar10``; figures in the README). The
coupling networks' 3x3 convolutions must use a formulation whose backward runs well
inside the scan (``compute.conv="auto"``, ``dgmjax.nn.conv``).

Drift. x_k is rebuilt, not stored, so float rounding in each inverse accumulates over
the K steps of a level: the gradient is the exact gradient at the rebuilt point, which
differs from the stored one by the reconstruction error. Affine couplings divide by
s = sigmoid(.) in (0, 1) and 1x1 convolutions multiply by W^-1, so a step whose scales
are small or whose W is ill-conditioned amplifies the error. ``GlowModel`` reports the
error of the first step's rebuilt input (per level, relative: max|x_rebuilt - x| /
max|x|) as the metric ``rev_recon_err``. Do not trust the reversible gradient when
``rev_recon_err`` exceeds about 1e-3: the per-step gradients are then computed at points
that measurably differ from the forward pass's (float32 inverses of a healthy Glow rebuild
to ~1e-6; see the README for measured figures), and switch to another ``compute.remat`` (or
x64) for that run. NaN/inf in it means an inverse overflowed (a scale s -> 0).

Composition. The steps run through ``dgmjax.nn.repeat.reversible`` (the generic
reversible scan of the executor, a ``jax.custom_vjp``) with this module's ``step_forward``
and ``step_backward``, on the one stacked parameter layout (``blocks_i/flows/...``,
leading [K] axis): a checkpoint trained reversibly runs without it and vice versa. On
XLA:CPU the memory is only freed when the steps are scanned (an unrolled loop of
custom-VJP steps kept the forward outputs alive), so ``compute.unroll`` does not apply
to the reversible forward. ``compute.remat="reversible"`` selects this path; it replaces
``jax.checkpoint`` around a step, since the backward already keeps one step's activations
at a time. ``compute.dtype=bfloat16``: only the
coupling networks compute in bfloat16; the flow's main path (x_k, ActNorm, the 1x1
convolutions, the coupling's affine map) stays float32, and NN(y_a) is re-evaluated on
exactly the y_a it saw in the forward pass when nothing drifted, so bf16 does not by
itself add drift; once x_k has drifted, bf16 rounding of NN's output makes the next
rebuilt step differ by bf16's 2^-8 relative precision instead of float32's 2^-24: check
``rev_recon_err`` before trusting a bf16 reversible run.

Reverse mode only: a ``custom_vjp`` has no forward-mode rule, so ``jax.jvp``/``jacfwd``
through a reversible Glow's forward raise JAX's "can't apply forward-mode autodiff (jvp)
to a custom_vjp function". The same variables run with any other ``compute.remat`` (the
default Glow supports both modes).

Shapes: x, y: float32 [B,H,W,C] (C even); log_det: float32 [B]; stacked parameters carry a
leading [K] axis; ``perms``: int [K,C] (fixed channel permutations) or None. Every
function takes the step's ``StepSpec`` and the model's ``Compute`` first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import CONSTANTS
from dgmjax.flows.conditioners import CouplingNet
from dgmjax.flows.couplings import coupling_transform
from dgmjax.flows.permutations import InvConv1x1, InvConv1x1LU, Permute
from dgmjax.flows.step_spec import StepSpec
from dgmjax.nn.compute import Compute
from dgmjax.nn.repeat import reversible


def _pre(spec: StepSpec, params, consts, perm, x, inverse=False):
  """ActNorm then the 1x1 permutation (inverse: P^-1 then ActNorm^-1): (out, log_det[B]).

  The layers are applied as pure functions of the given variables (``parent=None``: they
  are not submodules of whichever module happens to be calling)."""
  actnorm = ActNorm(spec.logscale_factor, parent=None)
  v_act = {"params": params["actnorm"]}
  if spec.permutation == "lu":
    perm_fn = lambda u, inv: InvConv1x1LU(parent=None).apply(
        {"params": params["invconv"], CONSTANTS: consts["invconv"]}, u, inv)
  elif spec.permutation == "conv":
    perm_fn = lambda u, inv: InvConv1x1(parent=None).apply({"params": params["invconv"]}, u, inv)
  else:
    perm_fn = lambda u, inv: Permute(spec.permutation, parent=None).apply({}, u, inv, perm)
  if inverse:
    u, ld1 = perm_fn(x, True)
    out, ld2 = actnorm.apply(v_act, u, True)
  else:
    u, ld1 = actnorm.apply(v_act, x, False)
    out, ld2 = perm_fn(u, False)
  return out, ld1 + ld2


def _net(spec: StepSpec, compute: Compute, net_params, xa):
  """h = NN(x_a): float32 [B,H,W,C] (affine) or [B,H,W,C/2] (additive)."""
  c = 2 * xa.shape[-1]
  net = CouplingNet(spec.width, c if spec.affine else c // 2, spec.net_actnorm,
                    spec.edge_bias, compute, parent=None)
  return net.apply({"params": net_params}, xa)


def _pre_params(params):
  return {k: v for k, v in params.items() if k != "coupling"}


def step_forward(spec: StepSpec, compute: Compute, params, consts, perm, x):
  """One step of flow, x -> (y, log_det[B]); the same maths (and variables) as
  ``glow.FlowStep(spec, compute)``."""
  p, ld_pre = _pre(spec, _pre_params(params), consts, perm, x)
  half = p.shape[-1] // 2
  pa, pb = p[..., :half], p[..., half:]
  h = _net(spec, compute, params["coupling"]["net"], pa)
  yb, ld_c = coupling_transform(pb, h, spec.affine)
  return jnp.concatenate([pa, yb.astype(p.dtype)], -1), ld_pre + ld_c


def step_inverse(spec: StepSpec, compute: Compute, params, consts, perm, y):
  """x = f^-1(y) for one step (the reconstruction the backward pass does)."""
  half = y.shape[-1] // 2
  ya, yb = y[..., :half], y[..., half:]
  h = _net(spec, compute, params["coupling"]["net"], ya)
  pb, _ = coupling_transform(yb, h, spec.affine, inverse=True)
  p = jnp.concatenate([ya, pb.astype(y.dtype)], -1)
  return _pre(spec, _pre_params(params), consts, perm, p, inverse=True)[0]


def step_backward(spec: StepSpec, compute: Compute, params, consts, perm, y, gy, gld):
  """Rebuilds a step's input from its output y and back-propagates through the step.

  y, gy = dL/dy: [B,H,W,C]; gld = dL/dlog_det: [B] (the same for every step, as the
  log-dets add up). Returns (x, dL/dx, dL/dparams) with dL/dparams shaped like params.
  """
  half = y.shape[-1] // 2
  ya, yb = y[..., :half], y[..., half:]
  gya, gyb = gy[..., :half], gy[..., half:]
  h, net_vjp = jax.vjp(lambda q, u: _net(spec, compute, q, u), params["coupling"]["net"], ya)
  pb, _ = coupling_transform(yb, h, spec.affine, inverse=True)
  pb = pb.astype(y.dtype)
  (_, ld_c), c_vjp = jax.vjp(lambda b, hh: coupling_transform(b, hh, spec.affine), pb, h)
  gpb, gh = c_vjp((gyb, gld.astype(ld_c.dtype)))
  g_net, gpa = net_vjp(gh)
  gp = jnp.concatenate([gya + gpa, gpb], -1)
  pre = _pre_params(params)
  x, _ = _pre(spec, pre, consts, perm, jnp.concatenate([ya, pb], -1), inverse=True)
  (_, ld_pre), pre_vjp = jax.vjp(lambda q, u: _pre(spec, q, consts, perm, u), pre, x)
  g_pre, gx = pre_vjp((gp, gld.astype(ld_pre.dtype)))
  return x, gx, {**g_pre, "coupling": {"net": g_net}}


def rebuild_input(spec: StepSpec, compute: Compute, params, consts, perms, y):
  """x = f_0^-1 o ... o f_{K-1}^-1 (y): the first step's input as the backward pass
  rebuilds it (a reversed scan of ``step_inverse``)."""
  perms = None if perms is None else jnp.asarray(perms, jnp.int32)

  def body(h, xs):
    p, c, perm = xs
    return step_inverse(spec, compute, p, c, perm, h), None
  x, _ = jax.lax.scan(body, y, (params, consts, perms), reverse=True)
  return x


def reversible_steps(spec: StepSpec, compute: Compute, params, consts, perms, x):
  """(y, log_det[B]) = the K steps of flow on x [B,H,W,C], with a reversible gradient.

  ``params``/``consts``: the stacked ``params``/``constants`` trees of the K steps (leading
  [K] axis; ``consts`` may be empty); ``perms``: numpy int [K,C] channel permutations for
  ``permutation`` in (reverse, shuffle), else None. ``dgmjax.nn.repeat.reversible`` with
  this module's ``step_forward``/``step_backward``: differentiable in ``params`` and ``x``
  in reverse mode only (``jax.grad``/``jax.vjp``); ``consts`` get zero cotangents.
  """
  perms = None if perms is None else jnp.asarray(np.asarray(perms), jnp.int32)
  return reversible(functools.partial(step_forward, spec, compute),
                    functools.partial(step_backward, spec, compute), params, consts, perms, x)
