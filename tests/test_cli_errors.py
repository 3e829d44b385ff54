"""Bad input: one line naming the fix, exit status 2, nothing written."""

from __future__ import annotations

import pytest
from support import TINY_SENTENCES

from rankcse.cli import main


def _fails(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    last = err[-1]
    assert last.startswith("rankcse: error: "), last
    assert expected in last, last


@pytest.fixture
def base(tiny_model_dir, tiny_corpus, tmp_path) -> list[str]:
    return [
        "train",
        "--model",
        str(tiny_model_dir),
        "--train-file",
        str(tiny_corpus),
        "--batch-size",
        "8",
        "--max-steps",
        "2",
        "--probe-size",
        "16",
        "--final-tasks",
        "none",
        "--output-dir",
        str(tmp_path / "out"),
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--method", "simcse_typo"], "unknown method 'simcse_typo' (did you mean 'simcse'?)"),
        (["--pooler", "max"], "unknown pooler 'max': use one of cls, cls_before_pooler, mean"),
        (["--rr-coef", "-0.1"], "rr_coef must be >= 0"),
        (["--max-len", "3"], "max_len must be at least 4"),
        (["--rr-schedule", "sometimes"], "use always, from_step:N, warmup:N or after_peak"),
        (["--rr-on", "z3"], "unknown rr_on 'z3'"),
        (["--data-dir", "/nonexistent/senteval"], "pass --data-dir"),
        (["--set", "rr_coeff=0.1"], "unknown setting 'rr_coeff'; did you mean 'rr_coef'?"),
        (["--set", "method_args.dup_rate=0.3"], "method 'simcse' has no setting 'dup_rate'"),
        (["--set", "rr_coef"], "must look like key=value"),
    ],
)
def test_bad_settings(capsys, base, tmp_path, extra, expected) -> None:
    _fails(capsys, base + extra, expected)
    assert not (tmp_path / "out").exists()


def test_missing_model_path(capsys, base, tmp_path) -> None:
    argv = base + ["--model", str(tmp_path / "no_such_model")]
    _fails(capsys, argv, "does not exist; pass an existing folder")
    assert not (tmp_path / "out").exists()


def test_missing_training_file(capsys, base, tmp_path) -> None:
    _fails(capsys, base + ["--train-file", str(tmp_path / "missing.txt")], "does not exist; pass --train-file")
    assert not (tmp_path / "out").exists()


def test_empty_corpus(capsys, base, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    _fails(capsys, base + ["--train-file", str(empty)], "has 0 usable sentence(s)")
    assert not (tmp_path / "out").exists()


def test_corpus_smaller_than_a_batch(capsys, base, tmp_path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("\n".join(TINY_SENTENCES[:5]))
    _fails(capsys, base + ["--train-file", str(small)], "lower --batch-size")


def test_existing_run_needs_resume_or_overwrite(capsys, base, tmp_path) -> None:
    assert main(base) == 0
    _fails(capsys, base, "pass --resume to continue it or --overwrite to replace it")
    assert main(base + ["--overwrite"]) == 0


def test_eval_errors(capsys, tmp_path) -> None:
    _fails(capsys, ["eval", "--model", str(tmp_path / "nope")], "does not exist")
    _fails(capsys, ["eval", "--pooler", "cls"], "pooler 'cls' needs a trained MLP head")
    _fails(capsys, ["eval", "--tasks", "sts99"], "unknown STS task 'sts99'")


def test_bad_input_with_overwrite_keeps_the_existing_run(capsys, base, tmp_path) -> None:
    assert main(base) == 0
    before = (tmp_path / "out" / "metrics.jsonl").read_text()
    _fails(capsys, base + ["--overwrite", "--rr-coef", "-1"], "rr_coef must be >= 0")
    _fails(capsys, base + ["--overwrite", "--train-file", str(tmp_path / "missing.txt")], "does not exist")
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == before
