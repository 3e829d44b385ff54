"""Shared fixtures (a tiny BERT built in-process, tiny corpora) and the test tiers.

Nothing is downloaded: the tokenizer comes from the packaged default model, the weights are
initialised here from a fixed seed.

Tiers: a test carries at most one of the markers ``slow``, ``ray``, ``cluster``, ``gpu`` (none: the
fast tier). A plain ``python -m pytest`` runs the fast tier (pyproject's addopts); ``--all-tiers``
runs every tier, fast first, prints each tier's wall time and fails on any skip but a missing
capability (no CUDA). ``gpu`` tests are skipped, with the reason, where torch sees no CUDA device.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
from support import NO_CUDA, TINY_SENTENCES, save_tiny_bert

#: The tiers in the order ``--all-tiers`` runs them; "fast" is a test without a tier marker.
TIERS = ("fast", "slow", "ray", "cluster", "gpu")
#: Skip reasons that name a missing capability: the only skips allowed under ``--all-tiers``.
CAPABILITY_SKIPS = (NO_CUDA,)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-tiers",
        action="store_true",
        help="run every tier (fast, slow, ray, cluster, gpu) in that order, print each tier's wall time, "
        "and fail on any skip but a missing capability (no CUDA)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("all_tiers"):
        config.option.markexpr = ""  # replaces addopts' fast-tier filter
    config.pluginmanager.register(Tiers(config), "rankcse-tiers")


def tier_of(keywords) -> str:
    """The tier of a test from its markers (its keywords); at most one tier marker is allowed."""
    tiers = [t for t in TIERS[1:] if t in keywords]
    if len(tiers) > 1:
        raise pytest.UsageError(f"a test carries the tiers {tiers}: give it exactly one (the most demanding)")
    return tiers[0] if tiers else "fast"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


class Tiers:
    """Orders the tests by tier, times each tier, and (under ``--all-tiers``) fails on a skip that is not a missing capability."""

    def __init__(self, config: pytest.Config) -> None:
        self.all_tiers = config.getoption("all_tiers")
        self.times: dict[str, dict] = {}
        self.bad_skips: list[str] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items[:] = sorted(items, key=lambda item: TIERS.index(tier_of(item.keywords)))  # stable: file order within a tier
        if not torch.cuda.is_available():
            for item in items:
                if "gpu" in item.keywords:
                    item.add_marker(pytest.mark.skip(reason=NO_CUDA))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        t = self.times.setdefault(tier_of(report.keywords), {"tests": 0, "seconds": 0.0, "start": None, "stop": 0.0})
        t["seconds"] += report.duration
        stop = getattr(report, "stop", time.time())
        start = getattr(report, "start", stop - report.duration)
        t["start"] = start if t["start"] is None else min(t["start"], start)
        t["stop"] = max(t["stop"], stop)
        t["tests"] += report.when == "setup"
        if report.skipped and not hasattr(report, "wasxfail") and not _skip_reason(report).startswith(CAPABILITY_SKIPS):
            self.bad_skips.append(f"{report.nodeid}: {_skip_reason(report)}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.bad_skips.append(f"{report.nodeid}: {_skip_reason(report)}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.all_tiers and self.bad_skips and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.times:
            terminalreporter.write_sep("-", "wall time per tier (first setup to last teardown)")
            for tier in TIERS:
                if tier in self.times:
                    t = self.times[tier]
                    wall = t["stop"] - t["start"]
                    terminalreporter.write_line(f"{tier:8s} {t['tests']:4d} tests {wall:8.1f} s  ({t['seconds']:.1f} s inside tests)")
        if self.all_tiers and self.bad_skips:
            terminalreporter.write_sep("=", "skips that are not a missing capability: not allowed with --all-tiers", red=True)
            for line in self.bad_skips:
                terminalreporter.write_line(line)


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    logging.getLogger("rankcse").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-dim BERT with random weights (seed 0) and the packaged tokenizer, saved as a model folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def nodrop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT without dropout: train mode is deterministic (loss formulas, fixed-batch training)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 distinct sentences, one a line."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_SENTENCES) + "\n")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy shared machine makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
