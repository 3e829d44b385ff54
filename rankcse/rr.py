"""The rank-reduction (RR) penalty: ``rr_coef · H(Z)`` added to a method's loss, and its schedules.

H is the von Neumann entropy (log of ``erank_vne``) of the batch representation, or the
singular-value entropy (``rr_kind="sv"``). Minimising it lowers the rank of the representation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from rankcse.errors import ConfigError
from rankcse.rank import RR_ENTROPIES

#: Which training representation the penalty sees.
RR_TARGETS = ("z1_post_mlp", "z1_pre_mlp", "both_views")
RR_KINDS = tuple(RR_ENTROPIES)
_SCHEDULE_HELP = "use always, from_step:N, warmup:N or after_peak"


@dataclass(frozen=True)
class RRSchedule:
    """When RR is on: ``always`` (the paper), ``from_step:N``, ``warmup:N`` (linear ramp over N steps), ``after_peak``."""

    kind: str = "always"
    steps: int = 0

    @classmethod
    def parse(cls, text: str) -> RRSchedule:
        """Parse the command-line form, e.g. ``from_step:500``."""
        text = text.strip()
        if text in ("always", "after_peak"):
            return cls(text)
        match = re.fullmatch(r"(from_step|warmup):(\d+)", text)
        if not match:
            raise ConfigError(f"unknown rr_schedule {text!r}: {_SCHEDULE_HELP}")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return self.kind if self.kind in ("always", "after_peak") else f"{self.kind}:{self.steps}"

    def factor(self, step: int, peak_passed: bool) -> float:
        """Multiplier in [0, 1] of ``rr_coef`` at optimisation ``step`` (0-based)."""
        if self.kind == "always":
            return 1.0
        if self.kind == "from_step":
            return 1.0 if step >= self.steps else 0.0
        if self.kind == "warmup":
            return 1.0 if self.steps == 0 else min(1.0, (step + 1) / self.steps)
        return 1.0 if peak_passed else 0.0


def rr_entropy(views: dict[str, torch.Tensor], rr_on: str = "z1_post_mlp", rr_kind: str = "vne") -> torch.Tensor:
    """Differentiable entropy H of the chosen batch representation (``both_views``: mean over the two views)."""
    entropy = RR_ENTROPIES[rr_kind]
    if rr_on == "both_views":
        return 0.5 * (entropy(views["z1_post_mlp"]) + entropy(views["z2_post_mlp"]))
    return entropy(views[rr_on])
