"""`rankcse train --method M` on the real offline default (packaged all-MiniLM-L6-v2) for the four added methods.

Short runs (batch 8, 4 steps, probe of 64 sentences, no final test) that exercise each method's
adaptations to the default model: ESimCSE's momentum encoder, InfoCSE's frozen half of 6 layers and
LM head from the word embeddings (MiniLM has no MLM head), PromptBERT's templates on its tokenizer.
"""

from __future__ import annotations

import json

import pytest
import torch
from support import read_jsonl

from rankcse import checkpoint as ckpt
from rankcse.build import build_method, load_for_eval
from rankcse.cli import main
from rankcse.config import TrainConfig

pytestmark = pytest.mark.slow
SENTENCES = ["a man is playing a guitar .", "the stock market fell sharply today .", "is it going to rain tomorrow ?"]


@pytest.mark.parametrize("name", ["esimcse", "mixcse", "infocse", "promptbert"])
def test_cli_train_on_the_default_model(name, tmp_path) -> None:
    out = tmp_path / name
    argv = [
        "train",
        "--method",
        name,
        "--batch-size",
        "8",
        "--max-steps",
        "4",
        "--eval-every",
        "4",
        "--probe-size",
        "64",
        "--final-tasks",
        "none",
        "--num-threads",
        "1",
        "--output-dir",
        str(out),
        "--quiet",
    ]
    threads = torch.get_num_threads()
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 4]
    assert 0 < records[-1]["stsb_dev"] <= 1 and records[-1]["loss/cl"] > 0
    steps = read_jsonl(out / "train_log.jsonl")
    assert len(steps) == 4 and all(s["loss/total"] > 0 for s in steps)
    meta = ckpt.read_meta(out / "best")
    assert meta["method"] == name and meta["train_config"]["batch_size"] == 8
    loaded = load_for_eval(str(out / "best"))
    assert loaded.embed(SENTENCES).shape == (3, 384)
    if name == "infocse":
        assert all("loss/mlm" in s for s in steps)
    if name == "promptbert":
        assert meta["eval_representation"] == "prompt_mask"
        assert json.loads((out / "config.json").read_text())["method_args"] == {}


def test_infocse_adapts_to_the_six_layer_default() -> None:
    method = build_method(TrainConfig(method="infocse").resolved())
    assert method.skip_from == 3 and len(method.frozen_encoder.encoder.layer) == 3  # half of 6, as 6 of 12 on BERT-base
    assert method.lm_head_source == "embeddings"  # the packaged checkpoint has no MLM head
    assert len(method.c_head) == 2 and method.lm_head.decoder.out_features == 30522
