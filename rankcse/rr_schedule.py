"""When the RR penalty is on: the ``rr_schedule`` setting parsed (no torch, so the config validates it cheaply)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rankcse.errors import ConfigError

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
