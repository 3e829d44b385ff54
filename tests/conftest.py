"""Shared fixtures: a tiny BERT built in-process (random weights, the packaged tokenizer) and tiny corpora.

Nothing is downloaded: the tokenizer comes from the packaged default model, the weights are
initialised here from a fixed seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from support import TINY_SENTENCES, save_tiny_bert


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    logging.getLogger("rankcse").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-dim BERT with random weights (seed 0) and the packaged tokenizer, saved as a model folder."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 distinct sentences, one a line."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_SENTENCES) + "\n")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy shared machine makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
