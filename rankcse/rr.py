"""The rank-reduction (RR) penalty: ``rr_coef · H(Z)`` added to a method's loss, and its schedules.

H is the von Neumann entropy (log of ``erank_vne``) of the batch representation, or the
singular-value entropy (``rr_kind="sv"``). Minimising it lowers the rank of the representation.
"""

from __future__ import annotations

import torch

from rankcse.names import RR_KINDS, RR_TARGETS
from rankcse.rank import RR_ENTROPIES
from rankcse.rr_schedule import RRSchedule

__all__ = ["RR_KINDS", "RR_TARGETS", "RRSchedule", "rr_entropy"]


def rr_entropy(views: dict[str, torch.Tensor], rr_on: str = "z1_post_mlp", rr_kind: str = "vne") -> torch.Tensor:
    """Differentiable entropy H of the chosen batch representation (``both_views``: mean over the two views)."""
    entropy = RR_ENTROPIES[rr_kind]
    if rr_on == "both_views":
        return 0.5 * (entropy(views["z1_post_mlp"]) + entropy(views["z2_post_mlp"]))
    return entropy(views[rr_on])
