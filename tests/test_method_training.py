"""ESimCSE, MixCSE, InfoCSE and PromptBERT in the training loop, on tiny in-process BERTs.

Each method lowers its own loss on a fixed batch, composes with RR, round-trips through its best
checkpoint (``load_for_eval`` and ``rankcse eval`` give the in-memory numbers), and ESimCSE resumes
bit-identically with its queue and momentum encoder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import SENTENCES, read_jsonl, tiny_config, untimed

from rankcse import checkpoint as ckpt
from rankcse.build import build_method, load_for_eval
from rankcse.cli import main
from rankcse.errors import ConfigError, ModelLoadError
from rankcse.evaluation.sts import evaluate_sts
from rankcse.methods.esimcse import ESimCSE
from rankcse.train import Trainer, run

NEW_METHODS = ("esimcse", "mixcse", "infocse", "promptbert")


pytestmark = pytest.mark.usefixtures("one_thread")


def _own_loss(method, batch) -> float:
    """The method's loss on ``batch`` without dropout (the model has none); ESimCSE with an empty queue."""
    with torch.no_grad():
        if isinstance(method, ESimCSE):
            saved = method.queue
            method.queue = saved[:0]
            method.eval()  # eval mode: no EMA update, no push
            value = float(method(batch).loss)
            method.queue = saved
            return value
        method.train()  # BatchNorm (InfoCSE) uses batch statistics, as in training
        return float(method(batch).loss)


@pytest.mark.parametrize("name", NEW_METHODS)
def test_ten_steps_lower_the_loss_on_a_fixed_batch(name, nodrop_dir, tiny_corpus) -> None:
    cfg = tiny_config(nodrop_dir, tiny_corpus, method=name, method_args={"mlm_weight": 0.1} if name == "infocse" else {}).resolved()
    torch.manual_seed(0)
    method = build_method(cfg)
    batch = method.collate(SENTENCES * 2, np.random.default_rng(0))
    before = _own_loss(method, batch)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3)
    for _ in range(10):
        method.train()
        out = method(batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _own_loss(method, batch)
    assert after < before, (name, before, after)
    if name == "infocse":  # both terms train
        assert set(out.parts) == {"cl", "mlm"}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_corpus, tmp_path_factory):
    """One short run per method with RR on; the Trainer is kept so its in-memory model can be compared."""
    root = tmp_path_factory.mktemp("methods")
    out = {}
    for name in NEW_METHODS:
        cfg = tiny_config(
            tiny_model_dir, tiny_corpus, method=name, max_steps=3, eval_every=3, probe_size=16, rr_coef=0.3, learning_rate=1e-3
        )
        trainer = Trainer(cfg, root / name)
        trainer.run()
        out[name] = trainer
    return out


@pytest.mark.parametrize("name", NEW_METHODS)
def test_rr_composes_with_the_method(name, trained) -> None:
    steps = read_jsonl(trained[name].out / "train_log.jsonl")
    assert len(steps) == 3
    for r in steps:
        assert r["rr/coef"] == 0.3 and r["rr/entropy"] > 0
        assert r["loss/rr"] == pytest.approx(0.3 * r["rr/entropy"], rel=1e-6)
        method_loss = r["loss/cl"] + (1e-5 * r["loss/mlm"] if name == "infocse" else 0.0)
        assert r["loss/total"] == pytest.approx(method_loss + r["loss/rr"], rel=1e-5)
    if name == "infocse":
        assert all(r["loss/mlm"] > 0 for r in steps)
    record = read_jsonl(trained[name].out / "metrics.jsonl")[-1]
    assert record["loss/rr"] is not None and record["stsb_dev"] is not None


@pytest.mark.parametrize("name", NEW_METHODS)
def test_best_checkpoint_round_trip_gives_identical_embeddings(name, trained, capsys) -> None:
    trainer = trained[name]
    best = trainer.out / "best"
    meta = ckpt.read_meta(best)
    assert meta["step"] == 3 and meta["method"] == name
    assert meta["representation"] == trainer.method.representation_spec()
    loaded = load_for_eval(str(best))
    assert type(loaded) is type(trainer.method) and loaded.eval_representation == trainer.method.eval_representation
    sentences = ["a man plays a guitar .", "the market fell sharply", "is it raining ?"]
    assert torch.equal(trainer.method.embed(sentences), loaded.embed(sentences))
    # `rankcse eval` on the checkpoint reports exactly the in-memory model's scores
    in_memory = evaluate_sts(lambda s: trainer.method.embed(s), ["sts13"])
    capsys.readouterr()
    assert main(["eval", "--model", str(best), "--json", "--tasks", "sts13"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["sts13"] == in_memory["scores"]["sts13"] and cli["representation"] == trainer.method.eval_representation


def test_infocse_auxiliary_network_is_training_only(trained, tiny_model_dir) -> None:
    from safetensors.torch import load_file
    from transformers import BertModel

    trainer = trained["infocse"]
    method = trainer.method
    aux = method.auxiliary_modules()
    assert set(aux) == {"frozen_lower_layers", "c_head", "lm_head"}
    # the frozen layers are still those of the initial checkpoint, and only the c_head/LM head are optimised
    initial = BertModel.from_pretrained(str(tiny_model_dir), add_pooling_layer=False)
    frozen = method.frozen_encoder.state_dict()
    for key, value in frozen.items():
        assert torch.equal(value, initial.state_dict()[key]), key
    optimised = {id(p) for group in trainer.optim.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in method.c_head.parameters()) and all(id(p) in optimised for p in method.lm_head.parameters())
    assert not any(id(p) in optimised for p in method.frozen_encoder.parameters())
    # the best checkpoint holds the encoder and its (BatchNorm) head, nothing of the auxiliary network
    best = trainer.out / "best"
    modules = load_file(str(best / ckpt.MODULES_FILE))
    assert modules and all(k.startswith("head.net.") for k in modules)
    assert set(load_file(str(best / "model.safetensors"))) <= set(initial.state_dict())  # a plain BertModel: no auxiliary weights
    loaded = load_for_eval(str(best))
    assert loaded.auxiliary_modules() == {} and not any("c_head" in k or "lm_head" in k for k in loaded.state_dict())


def test_promptbert_checkpoint_keeps_its_representation(trained, tmp_path, capsys) -> None:
    best = trained["promptbert"].out / "best"
    meta = ckpt.read_meta(best)
    assert meta["eval_representation"] == "prompt_mask"
    assert meta["representation"]["template_ids"]["suffix"][-3:] == [103, 1012, 102]  # [MASK] . [SEP]
    with pytest.raises(ConfigError, match="its own representation"):
        load_for_eval(str(best), pooler="mean")
    # a checkpoint whose stored representation differs from what would be rebuilt is refused
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(best, tampered)
    meta["representation"]["template_ids"]["prefix"] = [101]
    ckpt.write_json_atomic(tampered / ckpt.META_FILE, meta)
    with pytest.raises(ModelLoadError, match="representation"):
        load_for_eval(str(tampered))


def test_esimcse_resume_restores_queue_and_momentum_encoder(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch) -> None:
    # 4 batches an epoch: 8 steps cross an epoch boundary (the queue is emptied) and the queue (12) truncates
    cfg = tiny_config(tiny_model_dir, tiny_corpus, method="esimcse", method_args={"queue_size": 12}, max_steps=8, eval_every=2)
    run(cfg, tmp_path / "straight")

    def crash(record, checkpoint):
        if record["step"] == 6:
            raise RuntimeError("simulated crash")

    for name in ("resumed", "resumed_without_extra"):
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(cfg, tmp_path / name, report=crash)
    state = torch.load(tmp_path / "resumed" / "last" / ckpt.STATE_FILE, weights_only=True)  # plain tensors: no code runs
    assert state["method_extra"]["queue"].shape == (12, 32) and "momentum_encoder" in state["method_extra"]
    assert not any(k.startswith("queue") for k in state["method"])  # carried by extra_state, not the state dict
    run(cfg, tmp_path / "resumed", resume=True)

    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [0, 2, 4, 6, 8]
    assert untimed(resumed) == untimed(straight)
    assert read_jsonl(tmp_path / "resumed" / "train_log.jsonl") == read_jsonl(tmp_path / "straight" / "train_log.jsonl")
    # control: without the queue and momentum encoder, the resumed run drifts (so the test above can fail)
    monkeypatch.setattr(ESimCSE, "load_extra_state", lambda self, state: None)
    run(cfg, tmp_path / "resumed_without_extra", resume=True)
    assert (
        read_jsonl(tmp_path / "resumed_without_extra" / "train_log.jsonl")[6]["loss/cl"]
        != read_jsonl(tmp_path / "straight" / "train_log.jsonl")[6]["loss/cl"]
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("method_args.dup_rat=0.3", "method 'esimcse' has no setting 'dup_rat': its settings are dup_rate, dup_type"),
        ("method_args.momentum=1.5", "esimcse momentum must be in [0, 1)"),
    ],
)
def test_bad_method_settings_are_one_line_errors(setting, expected, tiny_model_dir, tiny_corpus, tmp_path, capsys) -> None:
    argv = [
        "train",
        "--method",
        "esimcse",
        "--model",
        str(tiny_model_dir),
        "--train-file",
        str(tiny_corpus),
        "--set",
        setting,
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_method_specific_settings_are_validated(tiny_model_dir, tiny_corpus) -> None:
    for name, args, message in [
        ("mixcse", {"masked_logit": "nan"}, "masked_logit must be one of zero, exclude"),
        ("infocse", {"skip_from": 5}, "exceeds the 2 layers"),
        ("infocse", {"lm_head_init": "pretrained"}, "has no pretrained MLM head"),
        ("promptbert", {"template": "no slot here [MASK]"}, "must contain [X] and [MASK] once each"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            build_method(tiny_config(tiny_model_dir, tiny_corpus, method=name, method_args=args).resolved())
    with pytest.raises(ConfigError, match="trains with pooler cls or cls_before_pooler"):
        tiny_config(tiny_model_dir, tiny_corpus, method="promptbert", pooler="mean").resolved()


@pytest.mark.parametrize("name", NEW_METHODS)
def test_mixed_precision_step_and_device_moves(name, tiny_model_dir, tiny_corpus) -> None:
    """The autocast path (CUDA in training; bf16 on CPU here) and .to() reaching the modules kept outside the state dict."""
    method = build_method(tiny_config(tiny_model_dir, tiny_corpus, method=name).resolved())
    batch = method.collate(SENTENCES, np.random.default_rng(0))
    method.train()
    for _ in range(2):  # the second ESimCSE step uses a queue filled under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = method(batch)
        assert torch.isfinite(out.loss)
        out.loss.float().backward()
    if name == "esimcse":
        assert method.queue.dtype == torch.float32 and method.queue.shape[0] == 2 * len(SENTENCES)
    method.to(torch.float64)
    hidden = method.momentum_encoder if name == "esimcse" else method.frozen_encoder if name == "infocse" else None
    if hidden is not None:
        assert all(p.dtype == torch.float64 for p in hidden.parameters())
    assert torch.isfinite(method({k: v for k, v in batch.items()}).loss)
