"""Probing inside a training run: probing/* keys at the chosen cadence, in final.json, and no effect on training."""

from __future__ import annotations

import json

import pytest
from support import read_jsonl, tiny_config

from rankcse.cli import main
from rankcse.config import TrainConfig
from rankcse.errors import ConfigError
from rankcse.train import run

TASKS = ["sentlen_gen", "bshift_gen"]
KEYS = [f"probing/{t}" for t in TASKS]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("probing_runs")
    cfg = tiny_config(tiny_model_dir, tiny_corpus, max_steps=5, eval_every=1, num_threads=1)
    probed = run(cfg.with_overrides({"probing_tasks": TASKS, "probing_every_evals": 2}), root / "probed")
    plain = run(cfg, root / "plain")
    return probed, plain


def test_probing_keys_at_the_cadence_and_the_last_step(runs) -> None:
    probed, _ = runs
    records = read_jsonl(probed.output_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5]
    for r in records:
        due = r["step"] % 2 == 0 or r["step"] == 5  # every 2 evaluations of 1 step, and the last step
        for key in KEYS:
            assert key in r  # a stable schema: None where not probed
            assert (r[key] is not None) == due, (r["step"], key)
            if due:
                assert 0 <= r[key] <= 1
        assert (r["probing_seconds"] is not None) == due
    # even the random tiny BERT's [CLS] state tells sentence lengths apart better than chance (1/6)
    assert records[0]["probing/sentlen_gen"] > 0.2


def test_final_json_has_full_setting_probing_of_the_best_checkpoint(runs) -> None:
    probed, _ = runs
    final = json.loads((probed.output_dir / "final.json").read_text())
    assert final["checkpoint"] == "best"
    for task in TASKS:
        assert 0 <= final[f"probing/{task}"] <= 1
        details = final["probing"][task]
        assert details["settings"] == "full" and details["surrogate"] is True and details["n_train"] > 1000
        assert details["group"] == {"sentlen_gen": "surface", "bshift_gen": "syntactic"}[task]
        assert "generated from" in details["source"]


def test_probing_does_not_change_training(runs) -> None:
    probed, plain = runs
    drop = lambda r: {k: v for k, v in r.items() if not k.startswith("probing") and not k.endswith("_seconds")}  # noqa: E731
    assert [drop(r) for r in read_jsonl(probed.output_dir / "metrics.jsonl")] == [
        drop(r) for r in read_jsonl(plain.output_dir / "metrics.jsonl")
    ]
    assert not any(k.startswith("probing") for k in read_jsonl(plain.output_dir / "metrics.jsonl")[0])


def test_every_zero_probes_only_the_final_checkpoint(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tiny_corpus, max_steps=2, eval_every=1, probing_tasks=["sentlen_gen"], probing_every_evals=0)
    run(cfg, tmp_path / "run")
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["probing/sentlen_gen"] is not None for r in records] == [False, False, True]  # the last step always
    assert "probing/sentlen_gen" in json.loads((tmp_path / "run" / "final.json").read_text())


def test_settings_are_validated_before_anything_is_written(capsys, tiny_model_dir, tiny_corpus, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown probing task 'sentlen_gne'"):
        TrainConfig(probing_tasks=["sentlen_gne"]).resolved()
    with pytest.raises(ConfigError, match="probing_every_evals must be >= 0"):
        TrainConfig(probing_every_evals=-1).resolved()
    assert TrainConfig(probing_tasks=["generated"], transfer_tasks=["SST2"]).resolved().transfer_tasks == ["sst2"]
    base = [
        "train",
        "--model",
        str(tiny_model_dir),
        "--train-file",
        str(tiny_corpus),
        "--batch-size",
        "8",
        "--max-steps",
        "2",
        "--final-tasks",
        "none",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    for extra, expected in (
        (["--probing-tasks", "tense"], "pass --probing-data-dir"),
        (["--probing-tasks", "tense", "--probing-data-dir", str(tmp_path)], "needs past_present.txt"),
        (["--probing-tasks", "nope"], "unknown probing task 'nope'"),
        (["--transfer-tasks", "mr", "--data-dir", str(tmp_path)], "pass --data-dir"),
    ):
        assert main(base + extra) == 2
        assert expected in capsys.readouterr().err.strip().splitlines()[-1]
        assert not (tmp_path / "out").exists()
