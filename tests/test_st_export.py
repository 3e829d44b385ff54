"""Saved model folders are sentence-transformers models that embed exactly as rankcse evaluated them.

Each run trains a few steps on the tiny BERT (so the head and weights are trained ones), then
``SentenceTransformer(best/)`` encodes 200 STS-B dev sentences and is compared with rankcse's own
embeddings of the same checkpoint (``load_for_eval``), raw and after L2 normalisation.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer
from support import tiny_config

from rankcse import checkpoint as ckpt
from rankcse.build import build_method, load_for_eval
from rankcse.cli import main
from rankcse.config import TrainConfig
from rankcse.evaluation.sts import TASKS, resolve_data_dir
from rankcse.st_export import needs_custom_module
from rankcse.train import run

METHODS = ("simcse", "esimcse", "mixcse", "infocse", "promptbert")
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dev_sentences() -> list[str]:
    """200 distinct STS-B dev sentences (of varied lengths, from the packaged data)."""
    pairs = TASKS["stsb"].read(resolve_data_dir(None), "dev")[0]
    seen = list(dict.fromkeys([*pairs.sent1, *pairs.sent2]))
    return seen[:200]


def st_embeddings(folder, sentences: list[str]) -> torch.Tensor:
    model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=needs_custom_module(folder))
    return torch.as_tensor(model.encode(sentences, batch_size=32, convert_to_numpy=True))


def assert_same_embeddings(folder, sentences: list[str]) -> float:
    """Max abs difference between rankcse's and sentence-transformers' embeddings, raw and L2-normalised; returns it."""
    ours = load_for_eval(str(folder)).embed(sentences, batch_size=32)
    theirs = st_embeddings(folder, sentences)
    assert theirs.shape == ours.shape
    raw = float((ours - theirs).abs().max())
    unit = float((torch.nn.functional.normalize(ours, dim=-1) - torch.nn.functional.normalize(theirs, dim=-1)).abs().max())
    assert raw < TOL and unit < TOL, (raw, unit)
    return raw


def train_tiny(tmp_path, model_dir, corpus, name: str, **overrides):
    args = {"mlm_weight": 0.1} if name == "infocse" else {}
    cfg = tiny_config(model_dir, corpus, method=name, method_args=args, max_steps=2, eval_every=2, probe_size=64, **overrides)
    return run(cfg, tmp_path / name).output_dir / "best"


@pytest.mark.parametrize("name", METHODS)
def test_every_method_round_trips_through_sentence_transformers(name, tmp_path, tiny_model_dir, tiny_corpus, dev_sentences):
    best = train_tiny(tmp_path, tiny_model_dir, tiny_corpus, name)
    modules = json.loads((best / "modules.json").read_text())
    if name == "promptbert":
        assert modules[0]["type"] == "rankcse.st_modules.PromptMask" and len(modules) == 1
    else:
        assert [m["path"] for m in modules] == ["", "1_Pooling"]
        assert json.loads((best / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    assert json.loads((best / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert_same_embeddings(best, dev_sentences)
    card = (best / "README.md").read_text()
    assert f"# {name} fine-tuned with rankcse" in card and "| seed | 0 |" in card


def test_mean_pooler_and_cls_with_the_mlp_round_trip(tmp_path, tiny_model_dir, tiny_corpus, dev_sentences):
    mean = train_tiny(tmp_path / "mean", tiny_model_dir, tiny_corpus, "simcse", pooler="mean")
    assert json.loads((mean / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert_same_embeddings(mean, dev_sentences)
    mlp = train_tiny(tmp_path / "mlp", tiny_model_dir, tiny_corpus, "simcse", mlp_only_train=False)
    assert [m["path"] for m in json.loads((mlp / "modules.json").read_text())] == ["", "1_Pooling", "2_Dense"]
    assert_same_embeddings(mlp, dev_sentences)


def test_promptbert_with_denoising_round_trips(tmp_path, tiny_model_dir, tiny_corpus, dev_sentences):
    cfg = tiny_config(
        tiny_model_dir,
        tiny_corpus,
        method="promptbert",
        method_args={"eval_denoise": True, "eval_add_period": False},
        max_steps=2,
        eval_every=2,
        probe_size=64,
    )
    best = run(cfg, tmp_path / "run").output_dir / "best"
    assert json.loads((best / "sentence_bert_config.json").read_text())["denoise"] is True
    assert_same_embeddings(best, dev_sentences)


def test_export_converts_an_older_folder_and_the_card_gets_final_scores(tmp_path, tiny_model_dir, tiny_corpus, dev_sentences, capsys):
    cfg = tiny_config(tiny_model_dir, tiny_corpus, method="simcse", max_steps=2, eval_every=2, probe_size=64, final_tasks=["stsb"])
    run_dir = run(cfg, tmp_path / "run").output_dir
    card = (run_dir / "best" / "README.md").read_text()
    final = json.loads((run_dir / "final.json").read_text())
    assert f"{100 * final['stsb']:.2f}" in card
    old = tmp_path / "old"  # a folder as rankcse wrote it before the export existed
    shutil.copytree(run_dir / "best", old)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md"):
        (old / name).unlink()
    shutil.rmtree(old / "1_Pooling")
    assert main(["export", str(old), str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "modules.json").is_file() and (tmp_path / "new" / "README.md").is_file()
    assert_same_embeddings(tmp_path / "new", dev_sentences)
    assert main(["export", str(run_dir), str(tmp_path / "from_run")]) == 0  # a run folder exports its best/, card with final scores
    assert f"{100 * final['stsb']:.2f}" in (tmp_path / "from_run" / "README.md").read_text()
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_model_round_trips(tmp_path, dev_sentences):
    """The packaged MiniLM (BERT-like, 384-d, 512 positions) saved as a SimCSE checkpoint (training it is covered on the tiny model)."""
    cfg = TrainConfig(method="simcse").resolved()
    method = build_method(cfg, training=False)
    meta = {
        "method": "simcse",
        "eval_representation": method.eval_representation,
        "representation": method.representation_spec(),
        "train_config": cfg.to_dict(),
        "step": 0,
        "stsb_dev": None,
    }
    ckpt.save_model(method, tmp_path / "best", meta, {})
    assert json.loads((tmp_path / "best" / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    assert_same_embeddings(tmp_path / "best", dev_sentences)
