"""Rank metrics against hand-computed spectra, and the RR entropies' values and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankcse import rank


def test_identity_spectrum() -> None:
    s = rank.singular_values(torch.eye(8))
    assert torch.allclose(s, torch.ones(8, dtype=torch.float64))
    assert rank.energy_rank(s, 0.99) == 8
    assert rank.energy_rank(s, 0.5) == 4
    assert rank.erank_vne(s) == pytest.approx(8.0)
    assert rank.erank_sv(s) == pytest.approx(8.0)
    assert rank.numerical_rank(s, (8, 8)) == 8
    assert rank.stable_rank(s) == pytest.approx(8.0)


def test_rank_one_matrix() -> None:
    u = torch.randn(20, 1, dtype=torch.float64)
    v = torch.randn(1, 6, dtype=torch.float64)
    s = rank.singular_values(u @ v)
    assert rank.energy_rank(s, 0.99) == 1
    assert rank.erank_vne(s) == pytest.approx(1.0, abs=1e-9)
    assert rank.erank_sv(s) == pytest.approx(1.0, abs=1e-6)
    assert rank.numerical_rank(s, (20, 6)) == 1
    assert rank.stable_rank(s) == pytest.approx(1.0)


def test_known_diagonal() -> None:
    # singular values 4, 2, 1, 1: energies 16, 4, 1, 1 (total 22)
    z = torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0]))
    s = rank.singular_values(z)
    assert rank.energy_rank(s, 0.70) == 1  # 16/22 = 0.727
    assert rank.energy_rank(s, 0.90) == 2  # 20/22 = 0.909
    assert rank.energy_rank(s, 0.95) == 3  # 21/22 = 0.955
    assert rank.energy_rank(s, 0.99) == 4
    p = [16 / 22, 4 / 22, 1 / 22, 1 / 22]
    assert rank.erank_vne(s) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    q = [4 / 8, 2 / 8, 1 / 8, 1 / 8]
    assert rank.erank_sv(s) == pytest.approx(math.exp(-sum(x * math.log(x) for x in q)))
    assert rank.stable_rank(s) == pytest.approx(22 / 16)


def test_prepare_variants() -> None:
    z = torch.tensor([[3.0, 4.0], [6.0, 8.0]])
    assert torch.allclose(rank.prepare(z, "l2").norm(dim=1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(rank.prepare(z, "centered").mean(0), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(rank.prepare(z, "raw"), z.double())
    with pytest.raises(ValueError):
        rank.prepare(z, "whiten")


def test_rank_metrics_keys_and_normalisation() -> None:
    torch.manual_seed(0)
    z = torch.randn(50, 10) * torch.tensor([10.0] + [1.0] * 9)
    raw = rank.rank_metrics(z, "raw")
    assert set(raw) == {"energy_rank_90", "energy_rank_95", "energy_rank_99", "erank_vne", "erank_sv", "numerical_rank", "stable_rank"}
    # each normalisation is applied before the spectrum: compare with NumPy on the prepared matrices
    for name, m in (("raw", z.double().numpy()), ("l2", (z.double() / z.double().norm(dim=1, keepdim=True)).numpy())):
        p = np.linalg.svd(m, compute_uv=False) ** 2
        p = p / p.sum()
        got = rank.rank_metrics(z, name)
        assert got["erank_vne"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9), name
        assert got["energy_rank_99"] == float(np.searchsorted(np.cumsum(p), 0.99) + 1), name
    # one dominant column (x10) makes the raw spectrum far steeper than the row-normalised one
    assert raw["erank_vne"] < 0.5 * rank.rank_metrics(z, "l2")["erank_vne"]


def test_vne_entropy_matches_spectrum() -> None:
    torch.manual_seed(1)
    h = torch.randn(16, 32)
    expected = math.log(rank.erank_vne(rank.singular_values(rank.prepare(h, "l2"))))
    assert float(rank.vne_entropy(h)) == pytest.approx(expected, rel=1e-9)
    expected_sv = math.log(rank.erank_sv(rank.singular_values(rank.prepare(h, "l2"))))
    assert float(rank.sv_entropy(h)) == pytest.approx(expected_sv, rel=1e-9)


@pytest.mark.parametrize("kind", ["vne", "sv"])
@pytest.mark.parametrize("case", ["duplicated_rows", "rank_one", "identical_rows"])
def test_rr_gradients_finite_on_degenerate_batches(kind: str, case: str) -> None:
    torch.manual_seed(2)
    if case == "duplicated_rows":
        base = torch.randn(8, 16)
        h = torch.cat([base, base], dim=0)
    elif case == "rank_one":
        h = torch.randn(16, 1) @ torch.randn(1, 16)
    else:
        h = torch.randn(1, 16).repeat(16, 1)
    h = h.clone().requires_grad_(True)
    value = rank.RR_ENTROPIES[kind](h)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(h.grad).all()


def test_minimising_vne_lowers_rank() -> None:
    torch.manual_seed(3)
    h = torch.randn(32, 16, requires_grad=True)
    opt = torch.optim.SGD([h], lr=5.0)
    start = float(rank.vne_entropy(h).detach())
    for _ in range(80):
        opt.zero_grad()
        rank.vne_entropy(h).backward()
        opt.step()
    assert float(rank.vne_entropy(h).detach()) < start / 2
