"""Names that training, evaluation and analysis share, each defined once.

Imports nothing heavy (no torch, no Ray): the analysis side reads it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """A metric's column name, readable name and direction (as sentence-transformers' evaluators carry
    ``primary_metric`` and ``greater_is_better``)."""

    name: str
    display: str
    greater_is_better: bool = True

    @property
    def best(self) -> str:
        """The column holding the best value over a run, e.g. ``best_stsb_dev``."""
        return f"best_{self.name}"

    def better(self, new: float, old: float) -> bool:
        """Whether ``new`` improves on ``old`` in this metric's direction."""
        return new > old if self.greater_is_better else new < old

    @property
    def worst(self) -> float:
        """The value every real one improves on (the best value before the first evaluation)."""
        return -math.inf if self.greater_is_better else math.inf


#: The metric that selects the best checkpoint and the best step (SimCSE's choice): STS-B dev Spearman.
PRIMARY = MetricSpec("stsb_dev", "STS-B dev", greater_is_better=True)

#: Final test tasks, SimCSE's seven STS columns, in table order.
STS_TASKS: tuple[str, ...] = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
#: SentEval's name of each STS task (the header of SimCSE's results table).
SENTEVAL_NAMES: dict[str, str] = {
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "stsb": "STSBenchmark",
    "sickr": "SICKRelatedness",
}
#: Short names of the test scores in reports.
DISPLAY_NAMES: dict[str, str] = {
    "sts12": "STS12",
    "sts13": "STS13",
    "sts14": "STS14",
    "sts15": "STS15",
    "sts16": "STS16",
    "stsb": "STS-B test",
    "sickr": "SICK-R test",
    "avg": "STS test average (7 sets)",
}

# -- settings' allowed values (TrainConfig validates against these; the modules that implement them import them) --
#: Poolers (SimCSE's names): ``cls`` = [CLS] + MLP head while training, ``cls_before_pooler`` = [CLS], ``mean`` = masked mean.
POOLERS: tuple[str, ...] = ("cls", "cls_before_pooler", "mean")
#: Matrix preparations before a rank metric: rows L2-normalised, raw, column-centred.
NORMALIZATIONS: tuple[str, ...] = ("l2", "raw", "centered")
#: RR entropies: von Neumann (eigenvalues) and singular-value.
RR_KINDS: tuple[str, ...] = ("vne", "sv")
#: Which training representation the RR penalty sees.
RR_TARGETS: tuple[str, ...] = ("z1_post_mlp", "z1_pre_mlp", "both_views")

# -- probe ranks and the phase rank (rankcse.config and rayjobs.analysis read them) --
#: The probe rank metrics logged at every evaluation (``probe/<name>``).
PROBE_METRICS: tuple[str, ...] = ("erank_vne", "erank_sv", "energy_rank_99", "energy_rank_95", "energy_rank_90", "stable_rank")
#: The rank that splits training into phases and drives the after_peak RR schedule: the paper's analysis rank
#: (SPEC 2.1). Chosen over erank_vne on measured peaks, see README "Which rank defines the phases".
DEFAULT_PHASE_METRIC = "energy_rank_99"
