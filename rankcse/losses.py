"""Pure loss functions on tensors; methods build their inputs and call these."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity (Na, Nb) of the rows of ``a`` and ``b``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def info_nce(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over rows of ``logits`` (N, M); the positive of row i is column ``targets[i]`` (default i)."""
    if targets is None:
        targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)
