"""Alignment and uniformity (Wang & Isola, ICML 2020), as SimCSE reports them.

Both take L2-normalised embeddings; lower is better for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """Mean ‖f(x) − f(y)‖^α over positive pairs (rows of ``x`` and ``y``), after L2 normalisation."""
    x = F.normalize(x.to(torch.float64), dim=-1)
    y = F.normalize(y.to(torch.float64), dim=-1)
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log of the mean of exp(−t‖f(a) − f(b)‖²) over distinct unordered pairs of rows, after L2 normalisation."""
    x = F.normalize(x.to(torch.float64), dim=-1)
    sq = torch.pdist(x, p=2).pow(2)
    return float(sq.mul(-t).exp().mean().log())
