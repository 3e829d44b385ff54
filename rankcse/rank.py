"""Rank metrics of a representation matrix, and the differentiable entropies used by RR.

Every metric is a small pure function of an (N, d) matrix. The spectrum is always taken
in float64. ``prepare`` picks the matrix the paper's analysis looks at: rows L2-normalised
(default), raw, or column-centred (the covariance spectrum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rankcse.names import NORMALIZATIONS

#: Energy fractions reported for the energy (analysis) rank.
ENERGY_TAUS = (0.90, 0.95, 0.99)


def prepare(z: torch.Tensor, normalize: str = "l2") -> torch.Tensor:
    """Return ``z`` as float64, L2-normalised by row (``l2``), unchanged (``raw``) or column-centred (``centered``)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    z = z.detach().to(torch.float64)
    if normalize == "l2":
        return F.normalize(z, dim=-1)
    if normalize == "centered":
        return z - z.mean(dim=0, keepdim=True)
    return z


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values of ``z`` in float64, largest first (no gradient)."""
    return torch.linalg.svdvals(z.detach().to(torch.float64))


def energy_rank(s: torch.Tensor, tau: float = 0.99) -> int:
    """Fewest leading singular values whose squares hold a fraction ``tau`` of the total energy."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    energy = s.to(torch.float64) ** 2
    total = energy.sum()
    if total <= 0:
        return 0
    cumulative = torch.cumsum(energy, 0) / total
    # A small tolerance keeps tau=1.0 (and exact hits) from failing on rounding.
    k = int(torch.searchsorted(cumulative, torch.tensor(tau - 1e-12, dtype=torch.float64)).item()) + 1
    return min(k, s.numel())


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p[p > 0]
    return -(p * p.log()).sum()


def erank_vne(s: torch.Tensor) -> float:
    """Von Neumann effective rank: exp of the entropy of the squared singular values normalised to sum 1.

    On an L2-normalised matrix these are the eigenvalues of the autocorrelation matrix ZᵀZ/N.
    """
    energy = s.to(torch.float64) ** 2
    if energy.sum() <= 0:
        return 0.0
    return float(torch.exp(_entropy(energy / energy.sum())))


def erank_sv(s: torch.Tensor) -> float:
    """Roy–Vetterli effective rank: exp of the entropy of the singular values normalised to sum 1."""
    s = s.to(torch.float64)
    if s.sum() <= 0:
        return 0.0
    return float(torch.exp(_entropy(s / s.sum())))


def numerical_rank(s: torch.Tensor, shape: tuple[int, int], rtol: float | None = None) -> int:
    """Count of singular values above ``rtol * s_max`` (default: NumPy's ``max(shape) * eps``)."""
    if s.numel() == 0 or s[0] <= 0:
        return 0
    if rtol is None:
        rtol = max(shape) * torch.finfo(torch.float64).eps
    return int((s > rtol * s[0]).sum().item())


def stable_rank(s: torch.Tensor) -> float:
    """Stable rank ‖Z‖_F² / ‖Z‖₂²."""
    s = s.to(torch.float64)
    if s.numel() == 0 or s[0] <= 0:
        return 0.0
    return float((s**2).sum() / s[0] ** 2)


def rank_metrics(z: torch.Tensor, normalize: str = "l2", taus: tuple[float, ...] = ENERGY_TAUS) -> dict[str, float]:
    """All rank metrics of ``z`` after :func:`prepare`, keyed ``energy_rank_99``, ``erank_vne``, …"""
    m = prepare(z, normalize)
    s = singular_values(m)
    out: dict[str, float] = {f"energy_rank_{round(t * 100):02d}": float(energy_rank(s, t)) for t in taus}
    out["erank_vne"] = erank_vne(s)
    out["erank_sv"] = erank_sv(s)
    out["numerical_rank"] = float(numerical_rank(s, tuple(m.shape)))
    out["stable_rank"] = stable_rank(s)
    return out


# ---------------------------------------------------------------------------------------------
# Differentiable entropies for the rank-reduction (RR) penalty.


def vne_entropy(h: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Differentiable von Neumann entropy H = log erank_vne of the row-normalised ``h`` (N, d).

    Uses the eigenvalues of the N×N Gram matrix ẐẐᵀ/N in float64; they equal the non-zero
    eigenvalues of the autocorrelation ẐᵀẐ/N. ``eigvalsh``'s backward stays finite when
    eigenvalues repeat, and the clamp keeps the log finite on degenerate (e.g. duplicated) rows.
    """
    z = F.normalize(h.to(torch.float64), dim=-1)
    gram = (z @ z.T) / z.shape[0]
    lam = torch.linalg.eigvalsh(gram).clamp_min(eps)
    lam = lam / lam.sum()
    return -(lam * lam.log()).sum()


def sv_entropy(h: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Differentiable Roy–Vetterli entropy (log erank_sv) from ``svdvals`` of the row-normalised ``h``.

    ``svdvals``' backward needs no singular vectors, so it stays finite on rank-1 and duplicated rows;
    taking sqrt of Gram eigenvalues instead would give an infinite gradient at a zero eigenvalue.
    """
    z = F.normalize(h.to(torch.float64), dim=-1)
    s = torch.linalg.svdvals(z).clamp_min(eps)
    p = s / s.sum()
    return -(p * p.log()).sum()


RR_ENTROPIES = {"vne": vne_entropy, "sv": sv_entropy}
