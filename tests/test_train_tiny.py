"""The training loop on a tiny in-process BERT: files, reporting, resume, checkpoints, faults."""

from __future__ import annotations

import json

import pytest
import torch
from support import read_jsonl, tiny_config, untimed

from rankcse import checkpoint as ckpt
from rankcse.build import build_method, load_for_eval
from rankcse.errors import TrainingDiverged
from rankcse.evaluation.sts import evaluate_sts
from rankcse.methods import METHODS, MethodOutput
from rankcse.methods.simcse import SimCSE
from rankcse.train import run


def test_run_writes_metrics_checkpoints_and_reports(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    seen = []
    cfg = tiny_config(tiny_model_dir, tiny_corpus, final_tasks=["sts13"])
    result = run(cfg, tmp_path / "run", report=lambda record, checkpoint: seen.append((record["step"], checkpoint)))
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 3, 6]
    assert [s for s, _ in seen] == [0, 3, 6]
    assert seen[0][1] is None and seen[1][1] is not None  # resume checkpoints come with the report
    for key in (
        "loss/total",
        "loss/cl",
        "loss/rr",
        "rr/entropy",
        "batch/erank_vne",
        "probe/energy_rank_99",
        "probe/erank_vne",
        "probe/erank_sv",
        "probe/numerical_rank",
        "probe/stable_rank",
        "alignment",
        "uniformity",
        "stsb_dev",
        "phase_online",
        "lr",
    ):
        assert key in records[-1] and records[-1][key] is not None, key
    assert len(read_jsonl(tmp_path / "run" / "train_log.jsonl")) == 6
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["checkpoint"] == "best" and final["best_step"] == result.best_step
    # the final score is the saved best model's: re-evaluating best/ from disk gives the same number
    best = load_for_eval(str(ckpt.find_complete(tmp_path / "run" / "best")))
    again = evaluate_sts(lambda sentences: best.embed(sentences, cfg.eval_batch_size), ["sts13"], cfg.data_dir)
    assert final["sts13"] == pytest.approx(again["scores"]["sts13"], abs=1e-9) and final["sts13"] != 0
    meta = ckpt.read_meta(tmp_path / "run" / "best")
    assert meta["train_config"]["pooler"] == "cls" and meta["eval_representation"] == "cls_before_pooler"
    prov = json.loads((tmp_path / "run" / "best" / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["packages"]["torch"] and "commit" in prov["git"]


def test_checkpoint_round_trip_gives_identical_embeddings(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tiny_corpus, pooler="cls", mlp_only_train=False).resolved()
    method = build_method(cfg)
    with ckpt.atomic_dir(tmp_path / "ck") as folder:
        ckpt.save_model(method, folder, {"method": "simcse", "eval_representation": "cls", "train_config": cfg.to_dict()}, {})
    loaded = load_for_eval(str(tmp_path / "ck"))
    sentences = ["a man plays a guitar .", "the market fell ."]
    assert torch.equal(method.embed(sentences), loaded.embed(sentences))
    # the head is part of the evaluated representation here, and it was restored
    assert loaded.encoder.eval_pooler == "cls"


def test_resume_after_a_crash_gives_identical_metrics(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tiny_corpus, max_steps=8, eval_every=2, rr_coef=0.2)
    run(cfg, tmp_path / "straight")

    def crash(record, checkpoint):
        if record["step"] == 4:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, tmp_path / "resumed", report=crash)
    assert ckpt.find_complete(tmp_path / "resumed" / "last") is not None
    run(cfg, tmp_path / "resumed", resume=True)
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [0, 2, 4, 6, 8]
    assert untimed(resumed) == untimed(straight)
    assert read_jsonl(tmp_path / "resumed" / "train_log.jsonl") == read_jsonl(tmp_path / "straight" / "train_log.jsonl")
    # resuming a finished run changes nothing
    again = run(cfg, tmp_path / "straight", resume=True)
    assert again.steps == 8 and read_jsonl(tmp_path / "straight" / "metrics.jsonl") == straight


def test_same_seed_same_numbers_other_seed_differs(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    a = run(tiny_config(tiny_model_dir, tiny_corpus, seed=1), tmp_path / "a").records
    b = run(tiny_config(tiny_model_dir, tiny_corpus, seed=1), tmp_path / "b").records
    c = run(tiny_config(tiny_model_dir, tiny_corpus, seed=2), tmp_path / "c").records
    assert untimed(a) == untimed(b)
    assert untimed(a) != untimed(c)


def test_rr_schedule_from_step(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    run(tiny_config(tiny_model_dir, tiny_corpus, rr_coef=0.5, rr_schedule="from_step:3"), tmp_path / "r")
    coefs = [r["rr/coef"] for r in read_jsonl(tmp_path / "r" / "train_log.jsonl")]
    assert coefs == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]


class NanAtStep3(SimCSE):
    """SimCSE whose loss turns NaN at the third step (an injected fault)."""

    name = "nan_at_step3"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, batch):
        out = super().forward(batch)
        self.calls += 1
        if self.calls == 3:
            out = MethodOutput(out.loss * float("nan"), out.parts, out.views)
        return out


@pytest.fixture
def nan_method():
    METHODS[NanAtStep3.name] = NanAtStep3
    yield NanAtStep3.name
    METHODS.pop(NanAtStep3.name)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(nan_method, tiny_model_dir, tiny_corpus, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tiny_corpus, method=nan_method, eval_every=2)
    with pytest.raises(TrainingDiverged, match="step 3") as err:
        run(cfg, tmp_path / "nan")
    assert err.value.step == 3
    assert json.loads((tmp_path / "nan" / "error.json").read_text())["step"] == 3
    assert ckpt.read_meta(tmp_path / "nan" / "best")["step"] == 2
    assert [r["step"] for r in read_jsonl(tmp_path / "nan" / "metrics.jsonl")] == [0, 2]


def test_nan_loss_from_the_cli_is_one_line_with_exit_2(nan_method, tiny_model_dir, tiny_corpus, tmp_path, capsys) -> None:
    from rankcse.cli import main

    argv = [
        "train",
        "--method",
        nan_method,
        "--model",
        str(tiny_model_dir),
        "--train-file",
        str(tiny_corpus),
        "--batch-size",
        "8",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--probe-size",
        "16",
        "--final-tasks",
        "none",
        "--output-dir",
        str(tmp_path / "cli"),
    ]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("rankcse: error: loss became nan at step 3")
    assert (tmp_path / "cli" / "best" / "model.safetensors").is_file()


def test_undecodable_and_blank_lines_are_skipped_and_counted(tiny_model_dir, tiny_corpus, tmp_path) -> None:
    corpus = tmp_path / "dirty.txt"
    corpus.write_bytes(tiny_corpus.read_bytes() + b"\xff\xfe broken line\n\n   \nlast good sentence .\n")
    result = run(tiny_config(tiny_model_dir, corpus, max_steps=2, eval_every=2), tmp_path / "dirty")
    prov = json.loads((result.output_dir / "provenance.json").read_text())
    assert prov["corpus"]["skipped_undecodable"] == 1
    assert prov["corpus"]["skipped_blank"] == 2
    assert prov["corpus"]["sentences"] == 33
