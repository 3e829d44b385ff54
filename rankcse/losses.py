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


def info_nce_with_negatives(z1: torch.Tensor, z2: torch.Tensor, negatives: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """InfoNCE of z1 (N, d) against z2 (N, d), with extra negatives (Q, d) appended to every row's denominator.

    ESimCSE: row i is [cos(z1_i, z2_j)/τ]_j followed by [cos(z1_i, q_k)/τ]_k; the positive is z2_i.
    """
    logits = cosine_matrix(z1, z2) / temperature
    if negatives is not None and negatives.shape[0] > 0:
        logits = torch.cat([logits, cosine_matrix(z1, negatives.to(z1.dtype)) / temperature], dim=1)
    return info_nce(logits)


#: What a masked MixCSE logit becomes: ``zero`` (official: the 0/1 mask multiplies the logit) or ``exclude`` (-inf).
MIX_MASKED_LOGITS = ("zero", "exclude")


def mixcse_logits(z1: torch.Tensor, z2: torch.Tensor, mix_lambda: float, temperature: float, masked_logit: str = "zero") -> torch.Tensor:
    """MixCSE's (N, 3N) logit matrix (positive of row i at column i).

    With u = z1, v = z2 and indices mod N, the mixed negatives are stop-gradient
    m_j = λ·v_j + (1−λ)·v_{j+1} and m'_j = λ·u_j + (1−λ)·u_{j+1}; row i holds
    [s(u_i, v_j)]_j, [s(u_i, m_j)]_j with j = i−1 masked, and [s(m'_i, v_j)]_j with j = i+1 masked
    (those two mixes are mostly i's own positive). s = cos/τ.
    """
    if masked_logit not in MIX_MASKED_LOGITS:
        raise ValueError(f"masked_logit must be one of {MIX_MASKED_LOGITS}, got {masked_logit!r}")
    n = z1.shape[0]
    mixed_v = (mix_lambda * z2 + (1 - mix_lambda) * z2.roll(-1, dims=0)).detach()  # row j: λ v_j + (1-λ) v_{j+1}
    mixed_u = (mix_lambda * z1 + (1 - mix_lambda) * z1.roll(-1, dims=0)).detach()
    standard = cosine_matrix(z1, z2) / temperature
    anchor_vs_mixed = cosine_matrix(z1, mixed_v) / temperature  # [i, j] = s(u_i, m_j)
    mixed_vs_positive = cosine_matrix(mixed_u, z2) / temperature  # [i, j] = s(m'_i, v_j)
    rows = torch.arange(n, device=z1.device)
    fill = 0.0 if masked_logit == "zero" else float("-inf")
    mask_prev = torch.zeros(n, n, dtype=torch.bool, device=z1.device)
    mask_prev[rows, (rows - 1) % n] = True
    mask_next = torch.zeros(n, n, dtype=torch.bool, device=z1.device)
    mask_next[rows, (rows + 1) % n] = True
    anchor_vs_mixed = anchor_vs_mixed.masked_fill(mask_prev, fill)
    mixed_vs_positive = mixed_vs_positive.masked_fill(mask_next, fill)
    return torch.cat([standard, anchor_vs_mixed, mixed_vs_positive], dim=1)


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (M, V) logits for the M masked tokens; 0 (with a graph) when nothing was masked."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)
