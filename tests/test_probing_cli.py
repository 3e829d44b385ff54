"""``rankcse probe`` and ``rankcse transfer``: output, generated files, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from rankcse.cli import main
from rankcse.evaluation.probing import read_probing_file


def _fails(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rankcse: error: ") and expected in last, last


def test_probe_json_and_table(capsys, tiny_model_dir) -> None:
    argv = ["probe", "--model", str(tiny_model_dir), "--pooler", "mean", "--tasks", "sentlen_gen", "--setting", "fast"]
    assert main(argv + ["--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["representation"] == "mean" and payload["setting"] == "fast"
    assert payload["probing/sentlen_gen"] > payload["details"]["sentlen_gen"]["chance"] + 0.2
    assert payload["details"]["sentlen_gen"]["surrogate"] is True
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "surrogate" in out and "sentlen_gen" in out and "surface" in out


def test_probe_writes_generated_tasks_readable_with_data_dir(capsys, tiny_model_dir, tmp_path) -> None:
    assert main(["probe", "--tasks", "bshift_gen", "coordinv_gen", "--write-generated", str(tmp_path / "gen")]) == 0
    written = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert written == ["bshift_gen.txt", "coordinv_gen.txt"]  # surrogate names, never SentEval's file names
    assert len(read_probing_file(tmp_path / "gen" / "bshift_gen.txt")["test"][0]) == 2000


def test_transfer_runs_on_a_small_task(capsys, tiny_model_dir) -> None:
    assert main(["transfer", "--model", str(tiny_model_dir), "--pooler", "mean", "--tasks", "trec", "--kfold", "2", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert 0.19 < payload["transfer/trec"] <= 1 and payload["details"]["trec"]["n_test"] == 500


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["probe", "--tasks", "lenght"], "unknown probing task 'lenght'"),
        (["probe", "--tasks", "tense"], "pass --data-dir (SentEval's data)"),
        (["probe", "--data-dir", "/nonexistent/senteval"], "needs sentence_length.txt"),
        (["probe", "--tasks", "sentlen_gen", "--corpus", "/nonexistent/corpus.txt"], "does not exist; pass --corpus PATH"),
        (["probe", "--tasks", "sentlen_gen", "--model", "/nonexistent/model"], "does not exist"),
        (["probe", "--tasks", "sentlen_gen", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["probe", "--tasks", "tense", "--write-generated", "/tmp/x"], "writes generated (_gen) tasks only"),
        (["transfer", "--tasks", "sst5"], "unknown transfer task 'sst5'"),
        (["transfer", "--kfold", "1"], "--kfold must be >= 2"),
        (["transfer", "--data-dir", "/nonexistent/senteval"], "pass --data-dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, expected) -> None:
    _fails(capsys, argv, expected)
