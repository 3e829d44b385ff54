"""What a training run measures at every evaluation step, from one encoding of the probe set.

The probe set is STS-B dev (all 3,000 sentences by default): its embeddings give the rank
metrics, alignment (pairs with gold score > 4), uniformity (distinct sentences) and the STS-B dev
Spearman used to pick the best checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rankcse import metrics
from rankcse.errors import ConfigError
from rankcse.evaluation.sts import TASKS, resolve_data_dir
from rankcse.geometry import alignment, uniformity
from rankcse.names import PRIMARY
from rankcse.rank import rank_metrics


class StepEvaluator:
    """Per-evaluation-step metrics on STS-B dev.

    Args:
        data_dir: SentEval data folder (default: packaged copy).
        probe_size: keep this many sentences (a fixed random subset of pairs, same for every seed);
            ``None`` keeps all of STS-B dev.
        normalize: matrix preparation for the rank metrics (``l2``, ``raw`` or ``centered``).
    """

    def __init__(self, data_dir: str | Path | None = None, probe_size: int | None = None, normalize: str = "l2") -> None:
        pairs = TASKS["stsb"].read(resolve_data_dir(data_dir), "dev")[0]
        if probe_size is not None and probe_size > 2 * len(pairs):  # the config would record more sentences than were used
            raise ConfigError(
                f"probe_size {probe_size} is more than the {2 * len(pairs)} sentences of STS-B dev; "
                "lower --probe-size, or omit it to use them all"
            )
        keep = np.arange(len(pairs))
        if probe_size is not None and probe_size < 2 * len(pairs):
            keep = np.sort(np.random.default_rng(0).permutation(len(pairs))[: max(2, probe_size // 2)])
        self.sent1 = [pairs.sent1[i] for i in keep]
        self.sent2 = [pairs.sent2[i] for i in keep]
        self.gold = pairs.gold[keep]
        self.normalize = normalize
        self.unique = sorted(set(self.sent1) | set(self.sent2))
        index = {s: i for i, s in enumerate(self.unique)}
        self.idx1 = torch.tensor([index[s] for s in self.sent1])
        self.idx2 = torch.tensor([index[s] for s in self.sent2])
        self.positive = torch.from_numpy(self.gold > 4.0)

    @property
    def num_sentences(self) -> int:
        """Rows of the probe matrix (both sides of every pair, duplicates kept)."""
        return 2 * len(self.gold)

    def __call__(self, embed: Callable[[Sequence[str]], torch.Tensor]) -> dict[str, float]:
        """Embed the probe set once and return every per-step metric."""
        unique = torch.as_tensor(embed(self.unique), dtype=torch.float32)
        e1, e2 = unique[self.idx1], unique[self.idx2]
        probe = torch.cat([e1, e2], dim=0)
        out: dict[str, float] = {f"probe/{k}": v for k, v in rank_metrics(probe, self.normalize).items()}
        centered = rank_metrics(probe, "centered")
        out["probe/centered/energy_rank_99"] = centered["energy_rank_99"]
        out["probe/centered/erank_vne"] = centered["erank_vne"]
        out["alignment"] = alignment(e1[self.positive], e2[self.positive]) if self.positive.any() else float("nan")
        out["uniformity"] = uniformity(unique)
        cos = metrics.cosine_pairs(e1.numpy(), e2.numpy())
        out[PRIMARY.name] = metrics.spearman(cos, self.gold)  # selects the best checkpoint
        out[f"{PRIMARY.name}_pearson"] = metrics.pearson(cos, self.gold)
        return out
