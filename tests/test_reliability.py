"""Bad input and faults against `rankcse train`, `rayjobs/sweep.py` and `rankcse aggregate` (issue 13).

Every bad input ends with one line and exit status 2 (3 for a collapsed run), nothing is written and an
earlier run stays byte-identical; a run killed or failing to write a checkpoint resumes to the numbers of
an uninterrupted one; a collapsing run stops within a few evaluations and healthy runs never trip it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from support import ROOT, read_jsonl, save_tiny_bert, scaled, untimed

from rankcse import checkpoint as ckpt
from rankcse.cli import build_parser, config_from_args, main
from rankcse.collapse import MIN_START_RANK, PROBE_RANK
from rankcse.errors import CheckpointWriteError
from rankcse.evaluation.sts import resolve_data_dir
from rankcse.methods import METHODS
from rankcse.train import run
from rayjobs.analysis.aggregate import aggregate
from rayjobs.tuning import driver as sweep


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_lines(capsys) -> list[str]:
    """What a command printed on stderr, less log lines."""
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and not re.match(r"\d\d:\d\d:\d\d [IWE] ", line)]


def _train_args(model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--train-file",
        str(corpus),
        "--batch-size",
        "8",
        "--probe-size",
        "16",
        "--log-every",
        "100",
        "--data-dir",
        str(SMALL_DATA),
        "--output-dir",
        str(out),
        *extra,
    ]


SMALL_DATA = Path("/nonexistent")  # set by the small_senteval fixture


@pytest.fixture(scope="module", autouse=True)
def small_senteval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first lines of the packaged STS-B dev and STS13 sets in SentEval's layout: evaluations here take a fraction of the time."""
    global SMALL_DATA
    from rankcse.evaluation.sts import resolve_data_dir

    source, folder = resolve_data_dir(None), tmp_path_factory.mktemp("senteval")
    for sub, lines in (("STS/STSBenchmark", 301), ("STS/STS13-en-test", 150)):
        (folder / sub).mkdir(parents=True)
        for path in (source / sub).iterdir():
            text = path.read_text(encoding="utf-8").splitlines(keepends=True)
            (folder / sub / path.name).write_text("".join(text[:lines]), encoding="utf-8")
    SMALL_DATA = folder
    return folder


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT initialised wide (std 1.0) so its step-0 probe rank is above MIN_START_RANK: collapse can be detected."""
    return save_tiny_bert(tmp_path_factory.mktemp("wide_bert"), init_std=1.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tiny_model_dir, tiny_corpus) -> dict[str, Path]:
    """A finished run to protect, and the broken inputs of the table below."""
    root = tmp_path_factory.mktemp("bad_inputs")
    good = root / "good"
    assert (
        main(_train_args(tiny_model_dir, tiny_corpus, good, "--max-steps", "2", "--eval-every", "2", "--final-tasks", "none", "--quiet"))
        == 0
    )
    (root / "bad.yaml").write_text("max_steps: [1\n  oops: :\n")
    (root / "badtype.yaml").write_text("eval_batch_size: abc\n")
    (root / "binary.bin").write_bytes(b"\xff\xfe\xfd" * 100 + b"\n" + bytes(range(128, 256)) * 8 + b"\nok line\n")
    (root / "a_file").write_text("x")
    (root / "empty").mkdir()
    junk = root / "junk" / "t_00000_junk"
    junk.mkdir(parents=True)
    (junk / "params.json").write_bytes(b"\x00\x01junk")
    (junk / "result.json").write_bytes(b"\xff\xfe")
    # a run folder whose resume state is a pickle that would run code when unpickled
    evil = root / "evil"
    evil.mkdir()
    for name in ("config.json", "metrics.jsonl", "provenance.json"):
        (evil / name).write_bytes((good / name).read_bytes())
    (evil / "last").mkdir()
    (evil / "last" / ckpt.COMPLETE).touch()

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(root / "PWNED"),))

    torch.save({"step": 1, "x": Payload()}, evil / "last" / ckpt.STATE_FILE)
    # an export to protect, and a run whose best/ weights were cut in half (an interrupted copy)
    assert main(["export", str(good), str(root / "exported")]) == 0
    corrupt = root / "corrupt"
    shutil.copytree(good, corrupt)
    weights = corrupt / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"root": root, "good": good, "evil": evil, "corrupt": corrupt}


def _cases(model: Path, corpus: Path, s: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(command, argv, expected part of the one line): bad inputs across the three commands."""
    root, good = s["root"], s["good"]
    tr = _train_args(model, corpus, good, "--max-steps", "2", "--eval-every", "1", "--final-tasks", "none", "--overwrite")
    sw = ["--preset", "smoke", "--dry-run", "--storage-path", str(root / "storage")]
    agg = ["aggregate", "--no-figures", "--n-boot", "10"]
    corrupt, exported = s["corrupt"], root / "exported"
    ev = ["eval", "--model", str(model), "--data-dir", str(SMALL_DATA), "--tasks", "stsb"]
    probe = ["probe", "--model", str(model)]
    resume = _train_args(model, corpus, good, "--max-steps", "2", "--eval-every", "2", "--final-tasks", "none", "--resume")
    return [
        # issue 23: data loss
        ("export", ["export", str(good / "best"), str(good), "--overwrite"], "holds the checkpoint"),
        ("export", ["export", str(corrupt), str(exported), "--overwrite"], "model.safetensors cannot be read"),
        ("export", ["export", str(corrupt), str(root / "new_export")], "it is probably truncated"),
        ("eval", ["eval", "--model", str(corrupt / "best"), "--data-dir", str(SMALL_DATA)], "model.safetensors cannot be read"),
        # issue 23: silent failures and tracebacks
        ("train", resume + ["--data-dir", str(resolve_data_dir(None))], "cannot resume: setting 'data_dir' differs"),
        ("train", tr + ["--temperature", "inf"], "temperature must be a finite number > 0, got inf"),
        ("train", tr + ["--temperature", "nan"], "temperature must be a finite number > 0, got nan"),
        ("train", tr + ["--seed", "-1"], "seed must be a whole number from 0 to 4294967295"),
        ("train", tr + ["--seed", "99999999999999999999999"], "seed must be a whole number from 0 to 4294967295"),
        ("train", tr + ["--num-threads", "0"], "num_threads must be >= 1"),
        ("train", tr + ["--num-threads", "-1"], "num_threads must be >= 1"),
        ("train", tr + ["--probe-size", "100000"], "probe_size 100000 is more than the 602 sentences of STS-B dev"),
        ("train", tr + ["--output-dir", ""], "--output-dir is empty"),
        ("eval", ev + ["--batch-size", "-4"], "--batch-size must be >= 1, got -4"),
        ("eval", ev + ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        ("aggregate", agg + [str(good), "--output-dir", str(root / "agg"), "--rank-metric", "erank_vnee"], "unknown --rank-metric"),
        # issue 23: hints
        ("probe", probe + ["--tasks", "senteval"], "pass --data-dir (SentEval's data)"),
        ("probe", probe + ["--tasks", "generated", "--corpus", str(root / "missing.txt")], "pass --corpus PATH"),
        ("export", ["export", str(good), "/proc/rankcse-no-such/out"], "then run the command again"),
        ("train", tr + ["--config", str(root / "bad.yaml")], "is not valid YAML (expected ',' or ']', but got ':' at line 2"),
        ("train", tr + ["--config", str(root / "badtype.yaml")], "setting 'eval_batch_size' must be a whole number, got 'abc'"),
        ("train", tr + ["--config", str(root / "missing.yaml")], "does not exist"),
        ("train", tr + ["--set", "max_steps=abc"], "setting 'max_steps' must be a whole number, got 'abc'"),
        ("train", tr + ["--set", "seed=1.5"], "setting 'seed' must be a whole number, got 1.5"),
        ("train", tr + ["--set", "final_tasks=3"], "setting 'final_tasks' must be a list of names, got 3"),
        ("train", tr + ["--set", "learning_rate=abc"], "setting 'learning_rate' must be a number, got 'abc'"),
        ("train", tr + ["--set", "mlp_only_train=maybe"], "setting 'mlp_only_train' must be true or false"),
        ("train", tr + ["--set", "rr_coeff=0.1"], "unknown setting 'rr_coeff'; did you mean 'rr_coef'?"),
        ("train", tr + ["--method", "simcse_typo"], "unknown method 'simcse_typo'"),
        ("train", tr + ["--rr-coef", "-1"], "rr_coef must be >= 0"),
        ("train", tr + ["--train-file", str(root / "missing.txt")], "does not exist; pass --train-file"),
        ("train", tr + ["--train-file", str(root / "binary.bin")], "is mostly undecodable: 2 of 3 non-blank line(s) are not UTF-8"),
        ("train", _train_args(model, corpus, root / "a_file", "--max-steps", "2"), "is a file; pass a folder"),
        ("train", tr[:-1], "already holds a run"),
        (
            "train",
            _train_args(model, corpus, s["evil"], "--max-steps", "2", "--eval-every", "1", "--final-tasks", "none", "--resume"),
            "cannot be read safely",
        ),
        ("sweep", sw + ["--set", "max_steps=abc"], "setting 'max_steps' must be a whole number, got 'abc'"),
        ("sweep", sw + ["--grid", "seed=[a,b]"], "setting 'seed' must be a whole number, got 'a'"),
        ("sweep", sw + ["--max-steps", "-1"], "max_steps must be >= 1"),
        ("sweep", ["--preset", str(root / "bad.yaml"), *sw[2:]], "is not valid YAML (expected"),
        ("sweep", ["--preset", "nope", "--dry-run"], "unknown preset 'nope'"),
        ("sweep", sw + ["--train-file", str(root / "binary.bin")], "is mostly undecodable"),
        ("aggregate", agg + [str(root / "nope"), "--output-dir", str(root / "agg")], "does not exist"),
        ("aggregate", agg + [str(root / "empty"), "--output-dir", str(root / "agg")], "no trial folders in"),
        ("aggregate", agg + [str(root / "junk"), "--output-dir", str(root / "agg")], "no readable trial in"),
        ("aggregate", agg + [str(good), "--output-dir", str(root / "a_file")], "is a file; pass a folder"),
        ("aggregate", agg + [str(good), "--output-dir", str(root / "agg"), "--smooth", "0"], "--smooth must be >= 1"),
    ]


def test_every_bad_input_gets_one_line_and_changes_nothing(capsys, monkeypatch, tiny_model_dir, tiny_corpus, scene) -> None:
    root = scene["root"]
    monkeypatch.chdir(root / "empty")  # where an empty --output-dir would write
    before = _tree(root)
    for command, argv, expected in _cases(tiny_model_dir, tiny_corpus, scene):
        rc = sweep.main(argv) if command == "sweep" else main(argv)
        err = _error_lines(capsys)
        prefix = "sweep: error: " if command == "sweep" else "rankcse: error: "
        assert rc == 2, (argv, err)
        assert len(err) == 1 and err[0].startswith(prefix) and expected in err[0], (argv, err)
        assert "Traceback" not in err[0]
        assert _tree(root) == before, f"{argv} wrote or changed files"  # the earlier run is byte-identical, nothing new
    assert not (root / "PWNED").exists()  # the unsafe resume state ran no code


def test_sweep_dry_run_without_the_corpus_lists_the_trials_and_warns(capsys, tmp_path) -> None:
    assert sweep.main(["--preset", "paper", "--dry-run", "--storage-path", str(tmp_path / "st")]) == 0
    out, err = capsys.readouterr()
    assert out.count("bert-base-uncased, batch") == 150 and "training file ~/data/wiki1m_for_simcse.txt does not exist" in err
    assert not (tmp_path / "st").exists()


def test_resume_without_a_checkpoint_says_so(caplog, tiny_model_dir, tiny_corpus, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0}\n')  # killed before its first checkpoint
    with caplog.at_level("WARNING", logger="rankcse"):
        assert (
            main(
                _train_args(tiny_model_dir, tiny_corpus, out, "--max-steps", "2", "--eval-every", "2", "--final-tasks", "none", "--resume")
            )
            == 0
        )
    assert "holds no whole resume checkpoint" in caplog.text and "starting again from step 0" in caplog.text
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 2]


# -- kill and write failure: resume gives the uninterrupted run's numbers ---------------------------------------------


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_model_dir, tiny_corpus) -> tuple[list[str], Path]:
    """The argv of the interrupted runs below, and the uninterrupted run made with it."""

    def argv(out: Path) -> list[str]:
        # One thread everywhere: the run is split between this process and a subprocess, and a different
        # thread count changes the float sums (another test may have left torch at another count).
        return _train_args(
            tiny_model_dir,
            tiny_corpus,
            out,
            "--max-steps",
            "8",
            "--eval-every",
            "2",
            "--final-tasks",
            "sts13",
            "--num-threads",
            "1",
            "--quiet",
        )

    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(argv(out)) == 0
    return argv, out


def _same_run(a: Path, b: Path) -> None:
    assert untimed(read_jsonl(a / "metrics.jsonl")) == untimed(read_jsonl(b / "metrics.jsonl"))
    fa, fb = untimed([json.loads((p / "final.json").read_text()) for p in (a, b)])
    assert fa == fb and "sts13" in fa


def test_sigkill_after_the_first_checkpoint_then_resume_equals_the_uninterrupted_run(straight, tmp_path) -> None:
    argv, reference = straight
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "rankcse", *argv(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + scaled(240)
        while not (out / "last" / "checkpoint.json").is_file():  # the first resume checkpoint (step 2) is whole
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, f"no resume checkpoint after {scaled(240):.0f} s; still running: {argv(out)}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "final.json").exists()  # killed mid-run, between evaluations
    assert main(argv(out) + ["--resume"]) == 0
    _same_run(out, reference)


def test_a_failed_checkpoint_write_keeps_the_last_one_and_resume_continues(straight, tmp_path) -> None:
    argv, reference = straight
    out = tmp_path / "limited"
    cfg = config_from_args(build_parser().parse_args(argv(out)))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit_after_first_checkpoint(record, saved):
        if saved is not None:  # the resume state (MBs) no longer fits; metrics lines still do
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))

    try:
        with pytest.raises(CheckpointWriteError) as failure:
            run(cfg, out, report=limit_after_first_checkpoint)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(failure.value)
    assert "\n" not in message and "could not write the" in message and str(out) in message
    assert "(step 2) is intact and --resume continues from it" in message
    assert ckpt.find_complete(out / "last") == out / "last" and json.loads((out / "last" / "checkpoint.json").read_text())["step"] == 2
    assert not list(out.glob("*.new"))
    assert main(argv(out) + ["--resume"]) == 0
    _same_run(out, reference)


# -- collapse ---------------------------------------------------------------------------------------------------------


def test_a_collapsing_run_stops_with_status_3_and_is_listed(capsys, wide_model_dir, tiny_corpus, tmp_path) -> None:
    out = tmp_path / "runs" / "collapse"
    argv = _train_args(
        wide_model_dir, tiny_corpus, out, "--max-steps", "30", "--eval-every", "3", "--final-tasks", "sts13", "--learning-rate", "1000"
    )
    assert main(argv) == 3
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("rankcse: error: representation collapsed at step ") and "lower --learning-rate" in err[0]
    records = read_jsonl(out / "metrics.jsonl")
    assert records[-1]["step"] <= 9 and records[-1]["collapsed"] is True  # within a few evaluations
    final = json.loads((out / "final.json").read_text())
    assert final["collapsed"] is True and final["collapse"]["step"] == records[-1]["step"] and "sts13" not in final
    assert json.loads((out / "error.json").read_text())["kind"] == "collapsed"
    aggregate(tmp_path / "runs", tmp_path / "agg", n_boot=10, figures=False)
    trials = pd.read_parquet(tmp_path / "agg" / "trials.parquet")
    assert trials["status"].tolist() == ["collapsed"] and "representation collapsed" in trials["error"].item()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_healthy_runs_never_trip_the_collapse_check(method, wide_model_dir, tiny_corpus, tmp_path) -> None:
    from support import tiny_config

    cfg = tiny_config(wide_model_dir, tiny_corpus, method=method, max_steps=4, eval_every=2, data_dir=str(SMALL_DATA))
    result = run(cfg, tmp_path / method)
    assert result.records[0][PROBE_RANK] >= MIN_START_RANK  # the check is armed for this model
    assert [r["step"] for r in result.records] == [0, 2, 4] and not any(r.get("collapsed") for r in result.records)
    assert "collapsed" not in json.loads((tmp_path / method / "final.json").read_text())


# -- the aggregator reports a cut history -----------------------------------------------------------------------------


def test_cut_histories_are_reported(scene, tmp_path) -> None:
    good = scene["good"]
    cell = {"method": "simcse", "rr_coef": 0.0, "rr_schedule": "always", "seed": 0}
    plain = tmp_path / "exp" / "cut_run"
    plain.mkdir(parents=True)
    for p in good.iterdir():
        if p.is_file():
            (plain / p.name).write_bytes(p.read_bytes())
    lines = (good / "metrics.jsonl").read_text().splitlines()
    (plain / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:40])  # cut mid-line: the evaluation at step 2 is missing
    tune = tmp_path / "exp" / "t_00001_simcse"  # no run folder, Tune's log cut
    tune.mkdir()
    (tune / "params.json").write_text(json.dumps({**cell, "seed": 1}))
    (tune / "result.json").write_text(json.dumps({"step": 0, "kind": "eval", "trial_id": "t_00001", "stsb_dev": 0.5}) + '\n{"step": 1, "ki')
    aggregate(tmp_path / "exp", tmp_path / "agg", n_boot=10, figures=False)
    trials = pd.read_parquet(tmp_path / "agg" / "trials.parquet").set_index("path")
    cut = trials.loc["cut_run"]
    assert cut["status"] == "truncated" and cut["n_evals"] == 1 and "(steps 2)" in cut["error"] and "last line is cut off" in cut["error"]
    no_run = trials.loc["t_00001_simcse"]
    assert no_run["status"] == "incomplete" and "result.json: its last line is cut off" in no_run["error"]


# -- issue 23: --overwrite and export replace the previous result only once the new one is whole ----------------------


def test_overwrite_replaces_exactly_the_runs_own_files(capsys, tiny_model_dir, tiny_corpus, scene, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(scene["good"], out)
    mine = {"best.bak/weights.bin": b"mine", "metrics.jsonl.orig": b"old", "lastweek-notes.txt": b"notes", "last.json": b"{}"}
    for name, data in mine.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(data)
    argv = _train_args(tiny_model_dir, tiny_corpus, out, "--max-steps", "2", "--eval-every", "1", "--final-tasks", "none", "--seed", "3")
    assert main(argv + ["--overwrite", "--quiet"]) == 0
    assert {name: (out / name).read_bytes() for name in mine} == mine  # names that merely start with a run file's stay
    assert json.loads((out / "config.json").read_text())["seed"] == 3 and [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [
        0,
        1,
        2,
    ]
    assert ckpt.find_complete(out / "best") == out / "best" and sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no scratch left
    capsys.readouterr()
    assert main(["export", str(out), str(tmp_path / "model")]) == 0
    first = _tree(tmp_path / "model")
    assert main(["export", str(scene["good"]), str(tmp_path / "model"), "--overwrite"]) == 0
    assert _tree(tmp_path / "model") != first and (tmp_path / "model" / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]


def test_a_run_diverging_before_any_checkpoint_does_not_claim_one(capsys, tiny_model_dir, tiny_corpus, tmp_path) -> None:
    out = tmp_path / "run"
    argv = _train_args(tiny_model_dir, tiny_corpus, out, "--max-steps", "2", "--eval-every", "1", "--final-tasks", "none")
    assert main(argv + ["--temperature", "1e-45"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "loss became" in err[0] and "no checkpoint was written" in err[0] and "last good" not in err[0], err
    assert json.loads((out / "error.json").read_text())["kind"] == "diverged"


def test_sigterm_mid_window_then_resume_logs_the_uninterrupted_means(straight, tmp_path) -> None:
    """A stop between two evaluations saves the window's running sums: the next row averages over all its steps."""
    from rankcse.train import Trainer

    argv, reference = straight
    out = tmp_path / "stopped"
    cfg = config_from_args(build_parser().parse_args(argv(out)))
    trainer = Trainer(cfg, out)
    step = trainer._train_step

    def step_then_sigterm_at_3(*args):  # the real step, then what SIGTERM's handler does, at step 3 (mid-window)
        step(*args)
        if trainer.state.step == 3:
            trainer.request_stop(signal.SIGTERM)

    trainer._train_step = step_then_sigterm_at_3
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert json.loads((out / "last" / "checkpoint.json").read_text())["step"] == 3
    assert main(argv(out) + ["--resume"]) == 0
    _same_run(out, reference)  # the step-4 row's loss and batch rank average steps 3 and 4, as uninterrupted
