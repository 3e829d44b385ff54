"""Shared fixtures: a tiny BERT built in-process (random weights, the packaged tokenizer) and tiny corpora.

Nothing is downloaded: the tokenizer comes from the packaged default model, the weights are
initialised here from a fixed seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from rankcse.paths import packaged_model_path

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


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    logging.getLogger("rankcse").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-dim BERT with random weights (seed 0) and the packaged tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 distinct sentences, one a line."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_SENTENCES) + "\n")
    return path


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
