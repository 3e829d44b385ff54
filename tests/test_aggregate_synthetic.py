"""The aggregator on synthetic experiment folders with a known peak, known spread and known correlations.

Every expected value is computed here with numpy from the generated series, not by the aggregator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from rankcse.errors import ConfigError
from rayjobs.analysis.aggregate import aggregate, parse_only
from rayjobs.analysis.schema import check_table

STEPS = np.arange(0, 210, 10)
SCORES = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")


def curves(peak: int, best: int, seed: int, rr: float) -> tuple[np.ndarray, np.ndarray]:
    """Rank rising to ``peak`` then falling; STS-B dev rising to ``best`` then falling, with a little noise."""
    noise = np.random.default_rng(seed + int(100 * rr)).normal(0, 0.002, STEPS.size)
    rank = np.where(STEPS <= peak, 20 + 0.3 * STEPS, 20 + 0.3 * peak - 0.12 * (STEPS - peak)) - 15 * rr
    dev = np.where(STEPS <= best, 0.70 + 0.0008 * STEPS, 0.70 + 0.0008 * best - 0.0005 * (STEPS - best)) + noise
    return rank, dev


def write_tune_trial(
    root: Path,
    trial_id: str,
    cell: dict,
    rank: np.ndarray,
    dev: np.ndarray,
    final: dict | None,
    error: str | None = None,
    layout: str = "run",
) -> Path:
    folder = root / f"{trial_id}_{cell['method']}_rr{cell['rr_coef']:g}_seed{cell['seed']}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(cell))
    records = [
        {
            "step": int(s),
            "stsb_dev": float(d),
            "probe/erank_vne": float(r),
            "probe/energy_rank_99": float(2 * r),
            "alignment": 0.2,
            "uniformity": -2.0,
            "loss/total": 0.1,
            "lr": 3e-5,
            "phase_online": 1,
        }
        for s, r, d in zip(STEPS, rank, dev)
    ]
    rows = [{**r, "kind": "eval", "trial_id": trial_id, "training_iteration": i + 1, "config": cell} for i, r in enumerate(records)]
    if final is not None:
        rows.append({"kind": "final", "step": 200, "trial_id": trial_id, **{f"final/{k}": v for k, v in final.items()}})
    if layout == "run":
        run = folder / "run"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({**cell, "model": "default", "max_steps": 200}))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if final is not None:
            (run / "final.json").write_text(json.dumps({**final, "steps": 200}))
    else:  # only Tune's result.json, with step 50 reported twice (a resumed attempt): the last report counts
        stale = {**rows[5], "stsb_dev": -1.0}
        rows.insert(5, stale)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (folder / "error.txt").write_text(
            f'Failure # 1 (occurred at 2026-12-01)\nTraceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: {error}\n'
        )
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("exp") / "synthetic"
    (root / ".rankcse").mkdir(parents=True)
    (root / ".rankcse" / "sweep.json").write_text(
        json.dumps(
            {
                "spec": {
                    "name": "synthetic",
                    "grid": {"method": [], "rr_coef": [], "rr_schedule": [], "seed": []},
                    "train": {"model": "default"},
                }
            }
        )
    )
    truth = {}
    n = 0
    for method in ("simcse", "mixcse"):
        for rr in (0.0, 0.1):
            for seed in range(4):
                peak, best = 60 + 10 * seed, 150 - 10 * seed - (40 if rr else 0)
                rank, dev = curves(peak, best, seed, rr)
                spread = 0.01 * (1 + seed) * (1 + (method == "mixcse")) * (0.5 if rr else 1.0)
                final = {k: 0.7 + spread + 0.001 * i for i, k in enumerate(SCORES)}
                final["avg"] = float(np.mean([final[k] for k in SCORES]))
                cell = {"method": method, "rr_coef": rr, "rr_schedule": "always", "seed": seed}
                trial_id = f"abcde_{n:05d}"
                layout = "result" if n == 3 else "run"
                write_tune_trial(root, trial_id, cell, rank, dev, final, layout=layout)
                truth[trial_id] = {"cell": cell, "peak": peak, "best": best, "rank": rank, "dev": dev, "final": final}
                n += 1
    rank, dev = curves(100, 150, 9, 0.0)
    write_tune_trial(
        root,
        "abcde_99998",
        {"method": "simcse", "rr_coef": 0.0, "rr_schedule": "always", "seed": 9},
        rank,
        dev,
        None,
        error="CUDA out of memory",
    )
    bad = root / "abcde_99999_broken"
    bad.mkdir()
    (bad / "params.json").write_text("{not json")
    (bad / "result.json").write_text("")
    out = root.parent / "out"
    result = aggregate(root, out, rank_metric="erank_vne", window=1, n_boot=300)
    return {
        "root": root,
        "out": out,
        "truth": truth,
        "result": result,
        "tables": {n: pd.read_parquet(out / f"{n}.parquet") for n in ("steps", "trials", "summary", "correlations")},
    }


def test_counts_errors_and_skipped_folders(experiment):
    result, trials = experiment["result"], experiment["tables"]["trials"]
    assert result.counts["completed"] == 16 and result.counts["errored"] == 1 and result.counts["corrupt"] == 1
    errored = trials[trials["status"] == "errored"].iloc[0]
    assert errored["trial_id"] == "abcde_99998" and "CUDA out of memory" in errored["error"]
    assert [p for p, _ in result.skipped] == ["abcde_99999_broken"]
    report = (experiment["out"] / "report.md").read_text()
    assert "abcde_99998" in report and "CUDA out of memory" in report and "abcde_99999_broken" in report and "1 corrupt" in report


def test_phases_and_peaks_match_the_built_series(experiment):
    steps, trials = experiment["tables"]["steps"], experiment["tables"]["trials"].set_index("trial_id")
    for trial_id, t in experiment["truth"].items():
        rows = steps[steps["trial_id"] == trial_id].sort_values("step")
        assert rows["step"].tolist() == STEPS.tolist()  # one row per evaluation; the duplicated step 50 is counted once
        peak = int(STEPS[np.argmax(t["rank"])])
        best = int(STEPS[1:][np.argmax(t["dev"][1:])])
        expected = np.where(STEPS <= peak, 1, np.where(STEPS <= best, 2, 3))
        assert rows["phase"].tolist() == expected.tolist(), trial_id
        assert trials.loc[trial_id, "peak_step"] == peak and trials.loc[trial_id, "best_step"] == best
        upto = STEPS <= best
        assert trials.loc[trial_id, "avg_rank"] == pytest.approx(t["rank"][upto].mean())
        assert trials.loc[trial_id, "phase_flag"] == ("ok" if best > peak else "phase2_empty")
    dup = steps[(steps["trial_id"] == "abcde_00003") & (steps["step"] == 50)]["stsb_dev"].item()
    assert dup == pytest.approx(experiment["truth"]["abcde_00003"]["dev"][5])  # the later report of the step wins


def test_seed_std_and_rr_difference_are_numpy_values(experiment):
    summary = experiment["tables"]["summary"]
    truth = experiment["truth"].values()
    for method in ("simcse", "mixcse"):
        for rr in (0.0, 0.1):
            values = np.array([t["final"]["stsb"] for t in truth if t["cell"]["method"] == method and t["cell"]["rr_coef"] == rr])
            row = summary[(summary["method"] == method) & (summary["rr_coef"] == rr) & (summary["metric"] == "stsb")].iloc[0]
            assert row["n"] == 4 and row["mean"] == pytest.approx(values.mean()) and row["std"] == pytest.approx(values.std(ddof=1))
            assert row["mean_ci_low"] <= row["mean"] <= row["mean_ci_high"]
            if rr:
                base = np.array([t["final"]["stsb"] for t in truth if t["cell"]["method"] == method and t["cell"]["rr_coef"] == 0.0])
                va, vb = values.var(ddof=1) / values.size, base.var(ddof=1) / base.size
                assert row["diff_vs_no_rr"] == pytest.approx(values.mean() - base.mean())
                assert row["welch_t"] == pytest.approx((values.mean() - base.mean()) / np.sqrt(va + vb))


def test_phase_correlations_are_per_trial_and_combined_over_trials(experiment):
    corr = experiment["tables"]["correlations"]
    truth = experiment["truth"]
    for phase in (1, 2):
        rs = []
        for trial_id, t in truth.items():
            if t["cell"]["method"] != "simcse":
                continue
            peak = int(STEPS[np.argmax(t["rank"])])
            best = int(STEPS[1:][np.argmax(t["dev"][1:])])
            inside = (STEPS <= peak) if phase == 1 else ((STEPS > peak) & (STEPS <= best))
            x, y = t["rank"][inside], t["dev"][inside]
            usable = x.size >= 3 and np.ptp(x) > 0.01 * t["rank"].max()  # the rank moves by more than its resolution
            per = corr[(corr["scope"] == "trial") & (corr["trial_id"] == trial_id) & (corr["phase"] == phase)]
            per = per[(per["rank_metric"] == "probe/erank_vne") & (per["variant"] == ("with step 0" if phase == 1 else "peak to best"))]
            assert per["usable"].item() == usable and np.isnan(per["pearson_p"].item())  # no p-value from one run's evaluations
            if usable:
                assert per["pearson_r"].item() == pytest.approx(np.corrcoef(x, y)[0, 1])
                rs.append(np.corrcoef(x, y)[0, 1])
        z = np.arctanh(np.clip(rs, -0.999, 0.999))
        row = corr[
            (corr["analysis"] == "rank_vs_stsb_dev")
            & (corr["rank_metric"] == "probe/erank_vne")
            & (corr["phase"] == phase)
            & (corr["variant"] == ("with step 0" if phase == 1 else "peak to best"))
            & (corr["scope"] == "across_trials")
            & (corr["method"] == "simcse")
            & (corr["subset"] == "all")
        ].iloc[0]
        half = stats.t.ppf(0.975, z.size - 1) * z.std(ddof=1) / np.sqrt(z.size)
        assert row["n_trials"] == len(rs) and row["pearson_r"] == pytest.approx(np.tanh(z.mean()))
        assert (row["pearson_ci_low"], row["pearson_ci_high"]) == pytest.approx((np.tanh(z.mean() - half), np.tanh(z.mean() + half)))
        assert row["pearson_p"] == pytest.approx(stats.ttest_1samp(z, 0.0).pvalue)
        assert (row["pearson_r"] > 0) == (phase == 1)


def test_average_rank_vs_seed_std_across_conditions(experiment):
    truth = experiment["truth"].values()
    xs, ys = [], []
    for method in ("mixcse", "simcse"):
        for rr in (0.0, 0.1):
            group = [t for t in truth if t["cell"]["method"] == method and t["cell"]["rr_coef"] == rr]
            xs.append(np.mean([t["rank"][STEPS <= int(STEPS[1:][np.argmax(t["dev"][1:])])].mean() for t in group]))
            ys.append(np.std([t["final"]["avg"] for t in group], ddof=1))
    corr = experiment["tables"]["correlations"]
    row = corr[(corr["analysis"] == "avg_rank_vs_seed_std") & (corr["rank_metric"] == "probe/erank_vne") & (corr["score"] == "avg")].iloc[0]
    assert row["n"] == 4 and row["pearson_r"] == pytest.approx(np.corrcoef(xs, ys)[0, 1])


def test_tables_follow_the_schema_and_rerun_is_byte_identical(experiment, tmp_path):
    out = experiment["out"]
    for name in ("steps", "trials", "summary", "correlations"):
        assert check_table(out / f"{name}.parquet") == []
        assert pq.read_table(out / f"{name}.parquet").num_rows == len(experiment["tables"][name])
    again = aggregate(experiment["root"], tmp_path / "again", rank_metric="erank_vne", window=1, n_boot=300)
    for name in ("steps", "trials", "summary", "correlations"):
        assert (out / f"{name}.parquet").read_bytes() == (tmp_path / "again" / f"{name}.parquet").read_bytes(), name
    assert again.counts == experiment["result"].counts


def test_the_tables_alone_give_the_same_tables_again(experiment, tmp_path):
    """``--from-tables``: every table recomputed from steps.parquet and trials.parquet (how committed references are re-aggregated)."""
    out = experiment["out"]
    again = aggregate(out, tmp_path / "from_tables", rank_metric="erank_vne", window=1, n_boot=300, figures=False, from_tables=True)
    for name in ("steps", "trials", "summary", "correlations", "findings"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "from_tables" / f"{name}.parquet"), pd.read_parquet(out / f"{name}.parquet"), check_dtype=True
        )
    assert again.counts["completed"] == 16 and "Sweep report: from_tables" in (tmp_path / "from_tables" / "report.md").read_text()


def test_smoothing_ignores_a_one_evaluation_spike(tmp_path):
    root = tmp_path / "spiky"
    rank, dev = curves(120, 180, 0, 0.0)
    rank = rank.copy()
    rank[3] = rank.max() + 5  # a single noisy evaluation above the real peak
    write_tune_trial(
        root, "fffff_00000", {"method": "simcse", "rr_coef": 0.0, "rr_schedule": "always", "seed": 0}, rank, dev, {"stsb": 0.7, "avg": 0.7}
    )
    smoothed = np.array([rank[max(0, i - 1) : i + 2].mean() for i in range(rank.size)])  # centred window of 3, shrinking at the ends
    raw = aggregate(root, tmp_path / "raw", window=1, n_boot=50, figures=False)
    smooth = aggregate(root, tmp_path / "smooth", window=3, n_boot=50, figures=False)
    assert raw.files and smooth.files
    peak_raw = pd.read_parquet(tmp_path / "raw" / "trials.parquet")["peak_step"].item()
    peak_smooth = pd.read_parquet(tmp_path / "smooth" / "trials.parquet")["peak_step"].item()
    centre = int(np.argmax(smoothed))  # the smoothing finds the region; the peak is the raw maximum there, never moved off it
    assert peak_raw == STEPS[3] and abs(centre - 12) <= 1 and peak_smooth == 120


def test_plain_train_runs_are_read_too(tmp_path):
    run = tmp_path / "runs" / "simcse-seed0"
    run.mkdir(parents=True)
    rank, dev = curves(50, 120, 0, 0.0)
    (run / "config.json").write_text(
        json.dumps({"method": "simcse", "rr_coef": 0.0, "rr_schedule": "always", "seed": 0, "model": "default"})
    )
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": int(s), "stsb_dev": float(d), "probe/erank_vne": float(r)}) + "\n" for s, r, d in zip(STEPS, rank, dev))
        + '{"step": 21'
    )
    (run / "final.json").write_text(json.dumps({"stsb": 0.75, "avg": 0.75, "steps": 200}))
    result = aggregate(tmp_path / "runs", tmp_path / "out", n_boot=50, figures=False)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    # the cut-off line is dropped, and the trial is listed as truncated, not completed
    assert result.counts["truncated"] == 1 and trials["layout"].item() == "run" and trials["n_evals"].item() == STEPS.size
    assert trials["status"].item() == "truncated" and "last line is cut off" in trials["error"].item()


def test_documented_schema_is_the_one_in_the_code():
    from rayjobs.analysis.schema import markdown_doc

    root = Path(__file__).resolve().parent.parent
    assert markdown_doc() in (root / "results" / "README.md").read_text()
    assert markdown_doc().replace("### `", "#### `") in (root / "README.md").read_text()


def test_probing_accuracy_flows_into_the_tables_by_phase(tmp_path):
    root = tmp_path / "probed"
    rank, dev = curves(60, 150, 0, 0.0)
    probed_at = {0: 0.40, 40: 0.55, 60: 0.60, 100: 0.58, 140: 0.52, 200: 0.50}  # steps where probing ran -> sentlen_gen accuracy
    folder = write_tune_trial(
        root,
        "ppppp_00000",
        {"method": "simcse", "rr_coef": 0.0, "rr_schedule": "always", "seed": 0},
        rank,
        dev,
        {"stsb": 0.7, "avg": 0.7, "probing/sentlen_gen": 0.61},
    )
    lines = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in lines:
        record["probing/sentlen_gen"] = probed_at.get(record["step"])
    (folder / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    aggregate(root, tmp_path / "out", window=1, n_boot=50, figures=False)
    probing = pd.read_parquet(tmp_path / "out" / "probing.parquet")
    row = probing[(probing["level"] == "task") & (probing["task"] == "sentlen_gen")].iloc[0]
    peak, best = int(STEPS[np.argmax(rank)]), int(STEPS[1:][np.argmax(dev[1:])])
    p1 = [v for s, v in probed_at.items() if s <= peak]
    p2 = [v for s, v in probed_at.items() if peak < s <= best]
    assert row["acc_start_mean"] == pytest.approx(p1[0]) and row["change_phase1_mean"] == pytest.approx(p1[-1] - p1[0])
    assert row["change_phase2_mean"] == pytest.approx(p2[-1] - p1[-1]) and bool(row["surrogate"]) and row["group"] == "surface"
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert trials["probing/sentlen_gen"].item() == pytest.approx(0.61)
    assert check_table(tmp_path / "out" / "probing.parquet") == []
    assert "Probing across phases" in (tmp_path / "out" / "report.md").read_text()


def test_probing_table_is_per_condition_not_pooled_over_schedules_or_axes(tmp_path):
    """probing.parquet groups by every grid axis but the seed, as the summary: RR 0.1 always, RR 0.1 warmup:40 and an extra
    axis' second value are three conditions with their own accuracy (once pooled into one method x RR row, issue 22)."""
    root = tmp_path / "conditions"
    rank, dev = curves(60, 150, 0, 0.1)
    cells = {
        0.40: {"method": "simcse", "rr_coef": 0.1, "rr_schedule": "always", "seed": 0, "temp": 0.05},
        0.50: {"method": "simcse", "rr_coef": 0.1, "rr_schedule": "warmup:40", "seed": 0, "temp": 0.05},
        0.60: {"method": "simcse", "rr_coef": 0.1, "rr_schedule": "always", "seed": 0, "temp": 0.1},
    }
    for n, (acc, cell) in enumerate(cells.items()):
        folder = write_tune_trial(root, f"cond{n}_00000", cell, rank, dev, {"stsb": 0.7, "avg": 0.7})
        lines = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        for record in lines:
            record["probing/sentlen_gen"] = acc if record["step"] in (0, 100, 200) else None
        (folder / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    aggregate(root, tmp_path / "out", window=1, n_boot=50, figures=False)
    probing = pd.read_parquet(tmp_path / "out" / "probing.parquet")
    tasks = probing[probing["level"] == "task"]
    assert len(tasks) == 3 and (tasks["n_trials"] == 1).all(), tasks.to_string()
    got = {(r["rr_schedule"], float(r["temp"])): r["acc_start_mean"] for _, r in tasks.iterrows()}
    assert got == pytest.approx({(c["rr_schedule"], c["temp"]): acc for acc, c in cells.items()})
    assert check_table(tmp_path / "out" / "probing.parquet") == []
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| method | RR | rr_schedule | temp | group |" in report


def test_only_keeps_the_matching_cells(experiment, tmp_path):
    only = parse_only(["method=mixcse", "rr_coef=0.0,0.1", "seed=1,2"])
    result = aggregate(experiment["root"], tmp_path / "only", rank_metric="erank_vne", window=1, n_boot=50, figures=False, only=only)
    trials = pd.read_parquet(tmp_path / "only" / "trials.parquet")
    assert result.counts["completed"] == 4 and result.counts["corrupt"] == 1
    assert set(trials["method"]) == {"mixcse"} and sorted(trials["seed"]) == [1, 1, 2, 2]
    assert "Trials kept: method in {mixcse}; rr_coef in {0.0, 0.1}; seed in {1, 2}" in (tmp_path / "only" / "report.md").read_text()
    with pytest.raises(ConfigError, match="lr_typo"):
        aggregate(experiment["root"], tmp_path / "bad", rank_metric="erank_vne", n_boot=50, figures=False, only=parse_only(["lr_typo=1"]))
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_only(["method"])
