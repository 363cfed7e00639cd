"""Normalising flows: Glow's bijectors (Flax Linen modules with
``forward_and_log_det`` / ``inverse_and_log_det``), its priors, the multi-scale flow
and ``GlowModel`` (the dgmjax model protocol)."""

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.bijectors import Bijector, Chain
from dgmjax.flows.conditioners import CouplingNet, ZeroConv
from dgmjax.flows.couplings import Coupling
from dgmjax.flows.glow import FlowStep, Glow, GlowLevel, Steps
from dgmjax.flows.permutations import InvConv1x1, InvConv1x1LU, Permute
from dgmjax.flows.priors import ClassHead, SplitPrior, TopPrior, gaussian_log_prob
from dgmjax.flows.squeeze import Squeeze, Unsqueeze, squeeze2d, unsqueeze2d
from dgmjax.flows.step_spec import StepSpec

__all__ = ["ActNorm", "Bijector", "Chain", "Coupling", "CouplingNet", "InvConv1x1",
           "InvConv1x1LU", "Permute", "Squeeze", "Unsqueeze", "ZeroConv", "squeeze2d",
           "unsqueeze2d", "ClassHead", "SplitPrior", "TopPrior", "gaussian_log_prob",
           "FlowStep", "Glow", "GlowLevel", "StepSpec", "Steps"]
