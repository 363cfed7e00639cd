"""The static hyper-parameters of one Glow step of flow, shared by the Flax modules
(``glow.FlowStep``, ``glow.Steps``) and the pure functions of the reversible backward pass
(``reversible.step_forward``/``step_inverse``/``step_backward``), so both read one
definition. How a step runs (dtype, convolution formulation) is not part of it: that is
the model's one ``dgmjax.nn.compute.Compute`` value, passed beside it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """ActNorm -> permutation -> coupling, as in Kingma & Dhariwal 2018, table 1.

  width: channels of the coupling network's hidden layers; coupling: "affine" |
  "additive"; permutation: "lu" | "conv" | "reverse" | "shuffle"; net_actnorm: ActNorm
  after the coupling network's hidden convolutions (openai/glow) instead of biases
  (rosinality/glow-pytorch); logscale_factor: ActNorm's log-scale multiplier
  (openai/glow: 3.0; None: plain log-scale); edge_bias: openai/glow's padding of the
  3x3 convolutions (zeros plus an edge-indicator channel) instead of rosinality's.
  Frozen, so it is hashable and can be a Flax module field or a static jit argument.
  """
  width: int
  coupling: str = "affine"
  permutation: str = "lu"
  net_actnorm: bool = False
  logscale_factor: float | None = None
  edge_bias: bool = False

  @property
  def affine(self) -> bool:
    return self.coupling == "affine"
