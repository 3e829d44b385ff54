"""Test helpers (plain functions, imported by the tests; fixtures are in conftest.py): the tiny BERT, tiny configs, formulas."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rankcse.paths import packaged_model_path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, str(ROOT / "rayjobs" / "sweep.py")]
#: The skip reason of a ``gpu`` test where torch sees no CUDA device (the one skip ``--all-tiers`` allows).
NO_CUDA = "needs CUDA: torch sees no CUDA device on this machine (run the gpu tier on a GPU machine: python -m pytest -m gpu)"
#: Multiplies every subprocess timeout of the tests (a slow or busy machine: RANKCSE_TEST_TIMEOUT_SCALE=3).
TIMEOUT_SCALE_ENV = "RANKCSE_TEST_TIMEOUT_SCALE"

TINY_SENTENCES = [
    "a man is playing a guitar .",
    "a woman is slicing an onion .",
    "the cat sits on the mat .",
    "children are playing in the park .",
    "a dog runs across the field .",
    "the stock market fell sharply today .",
    "two men are riding horses on a beach .",
    "she reads a book in the library .",
    "the train arrives at noon .",
    "a chef is cooking pasta in the kitchen .",
    "rain is expected tomorrow morning .",
    "the team won the championship game .",
    "a bird is flying over the lake .",
    "he is fixing the roof of the house .",
    "people are walking down a busy street .",
    "the president gave a speech on television .",
    "a boy kicks a red ball .",
    "the museum opens at nine .",
    "a girl is painting a picture .",
    "the river flooded the small town .",
    "an old man feeds the pigeons .",
    "students are taking an exam .",
    "a plane lands on the runway .",
    "the baby is sleeping in the crib .",
    "a musician plays the violin on stage .",
    "the doctor examines a patient .",
    "snow covers the mountain peaks .",
    "a couple dances at the wedding .",
    "the computer crashed during the update .",
    "a farmer harvests wheat in the field .",
    "the lights went out in the storm .",
    "a woman rides a bicycle to work .",
]


SENTENCES = [
    "a man is playing a guitar .",
    "the cat sits on the mat while the dog sleeps by the warm fire .",
    "children are playing in the park",
    "she reads a book in the library ?",
    "the stock market fell sharply today after the announcement .",
]


def save_tiny_bert(folder: Path, dropout: float = 0.1, mlm_head: bool = False, seed: int = 0, init_std: float = 0.02) -> Path:
    """A 2-layer, 32-dim BERT with random weights and the packaged tokenizer (``mlm_head``: a BertForMaskedLM checkpoint).

    ``init_std`` is the weights' initial std (Hugging Face's default 0.02; wider gives a higher starting rank).
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config) if mlm_head else BertModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity written out: a_i·b_j / (|a_i| |b_j|)."""
    return (a @ b.T) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True).T)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of log Σ_j exp(l_ij) − l_i,target."""
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(logits.shape[0]), targets]).mean()


def mlp_head(method, x: torch.Tensor) -> torch.Tensor:
    """SimCSE's head as a formula: tanh(x Wᵀ + b)."""
    dense = method.encoder.head.dense
    return torch.tanh(x @ dense.weight.T + dense.bias)


def cls_states(method, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last-layer [CLS] states straight from the Hugging Face backbone."""
    return method.encoder.backbone(**tokens).last_hidden_state[:, 0]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU."""
    return F.gelu(x)


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def tiny_config(model_dir: Path, corpus: Path, **overrides):
    """A fast TrainConfig on the tiny model: batch 8, 6 steps, small probe set, no final test."""
    from rankcse.config import TrainConfig

    values = dict(
        model=str(model_dir),
        train_file=str(corpus),
        batch_size=8,
        max_steps=6,
        eval_every=3,
        probe_size=64,
        final_tasks=[],
        log_every=100,
        learning_rate=1e-3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def untimed(records: list[dict]) -> list[dict]:
    """Records without their wall-time keys (``*_seconds``), which differ between identical runs."""
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]


def scaled(seconds: float) -> float:
    """A subprocess timeout: ``seconds`` (about 3x the work's time on an idle 2-core machine) times $RANKCSE_TEST_TIMEOUT_SCALE."""
    return seconds * float(os.environ.get(TIMEOUT_SCALE_ENV) or 1)


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:]) or "(no output)"


def timed_out(cmd: list[str] | str, seconds: float, output: str | bytes | None) -> str:
    """The failure message of a subprocess that ran out of time: what it was, how long, and the tail of its output."""
    what = cmd if isinstance(cmd, str) else " ".join(str(c) for c in cmd)
    return (
        f"still running after {seconds:.0f} s ({TIMEOUT_SCALE_ENV}={os.environ.get(TIMEOUT_SCALE_ENV) or 1}; raise it on a busy machine): "
        f"{what}\n--- its last output ---\n{_tail(output)}"
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and what it started (a sweep's local Ray)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_command(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` with ``scaled(timeout)``, in a session of its own.

    On timeout it kills the command's process group and fails the test naming the command and the tail of its output.
    """
    seconds = scaled(timeout)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(timed_out(cmd, seconds, (out or "") + (err or "")), pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def wait_output(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """Wait for a Popen whose stdout is a text pipe (stderr merged) for ``scaled(timeout)``; its output.

    On timeout the process is killed and the test fails with ``what`` and the tail of its output.
    """
    seconds = scaled(timeout)
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(timed_out(what, seconds, out), pytrace=False)
    return out
