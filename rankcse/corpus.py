"""Training corpus: a plain-text file (one sentence a line) or a Hugging Face ``datasets`` name.

Bad lines never stop a run: undecodable and blank lines are skipped and counted (a file mostly undecodable is refused).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rankcse.errors import DataError
from rankcse.paths import DEFAULT_CORPUS

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    """Sentences to train on and where they came from."""

    sentences: list[str]
    source: str
    sha256: str | None = None
    skipped_undecodable: int = 0
    skipped_blank: int = 0

    def __len__(self) -> int:
        return len(self.sentences)


def read_text_corpus(path: str | Path, max_sentences: int | None = None) -> Corpus:
    """Read one sentence a line (UTF-8), skipping and counting undecodable and blank lines."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"training file {path} does not exist; pass --train-file PATH or --train-dataset NAME")
    sentences: list[str] = []
    undecodable = blank = 0
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for raw in handle:
            digest.update(raw)
            if max_sentences is not None and len(sentences) >= max_sentences:
                continue
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                undecodable += 1
                continue
            if not text:
                blank += 1
                continue
            sentences.append(text)
    if undecodable > len(sentences):
        raise DataError(
            f"training file {path} is mostly undecodable: {undecodable} of {undecodable + len(sentences)} non-blank line(s) "
            "are not UTF-8 text; "
            "pass a plain-text corpus, one sentence a line"
        )
    if undecodable:
        log.warning("skipped %d undecodable line(s) of %s", undecodable, path)
    corpus = Corpus(sentences, str(path.resolve()), digest.hexdigest(), undecodable, blank)
    _check_not_empty(corpus)
    return corpus


def parse_dataset_spec(spec: str) -> tuple[str, str | None, str, str | None]:
    """Split ``name[:config][@split][#column]`` into its parts (split defaults to ``train``)."""
    column = None
    if "#" in spec:
        spec, column = spec.rsplit("#", 1)
    split = "train"
    if "@" in spec:
        spec, split = spec.rsplit("@", 1)
    config = None
    if ":" in spec:
        spec, config = spec.split(":", 1)
    return spec, config, split, column


def read_hf_dataset(spec: str, max_sentences: int | None = None) -> Corpus:
    """Load sentences from a ``datasets`` dataset; the column defaults to ``text`` or the only string column."""
    name, config, split, column = parse_dataset_spec(spec)
    try:
        import datasets

        data = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types for a missing or unreachable dataset
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not load dataset {spec!r} ({first}); check the name, or pass --train-file PATH") from exc
    if column is None:
        string_columns = [c for c, f in data.features.items() if getattr(f, "dtype", None) == "string"]
        column = "text" if "text" in data.column_names else (string_columns[0] if len(string_columns) == 1 else None)
        if column is None:
            raise DataError(f"dataset {spec!r} has columns {data.column_names}; pick one with '{spec}#COLUMN'")
    if column not in data.column_names:
        raise DataError(f"dataset {spec!r} has no column {column!r}; its columns are {data.column_names}")
    sentences, blank = [], 0
    for text in data[column]:
        text = (text or "").strip()
        if not text:
            blank += 1
            continue
        sentences.append(text)
        if max_sentences is not None and len(sentences) >= max_sentences:
            break
    fingerprint = getattr(data, "_fingerprint", None)
    corpus = Corpus(sentences, f"hf:{spec}#{column}", fingerprint, 0, blank)
    _check_not_empty(corpus)
    return corpus


def load_corpus(train_file: str | None = None, train_dataset: str | None = None, max_sentences: int | None = None) -> Corpus:
    """The configured corpus: a file, a ``datasets`` name, or the packaged 27.7k-sentence default."""
    if train_dataset:
        return read_hf_dataset(train_dataset, max_sentences)
    return read_text_corpus(train_file or DEFAULT_CORPUS, max_sentences)


def _check_not_empty(corpus: Corpus) -> None:
    if len(corpus) < 2:
        raise DataError(
            f"training corpus {corpus.source} has {len(corpus)} usable sentence(s) "
            f"({corpus.skipped_undecodable} undecodable, {corpus.skipped_blank} blank); give a file with at least 2"
        )


def batches_per_epoch(n_sentences: int, batch_size: int) -> int:
    """Full batches in one epoch (the last partial batch is dropped so every batch has the same size)."""
    return n_sentences // batch_size


def epoch_order(n_sentences: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sentence order of one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_sentences)


def iterate_batches(corpus: Corpus, batch_size: int, seed: int, epoch: int, start: int = 0) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(batch_index, sentences)`` of one epoch from batch ``start`` on (for resuming)."""
    order = epoch_order(len(corpus), seed, epoch)
    for b in range(start, batches_per_epoch(len(corpus), batch_size)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield b, [corpus.sentences[i] for i in idx]


class Position(Protocol):
    """Where a run is in its data: optimisation steps taken, the epoch, and the next batch of that epoch."""

    step: int
    epoch: int
    batch_in_epoch: int


def batches_from(corpus: Corpus, batch_size: int, seed: int, state: Position, total_steps: int) -> Iterator[tuple[int, list[str]]]:
    """``(batch index in epoch, sentences)`` from ``state``'s position (``epoch``, ``batch_in_epoch``) until ``state.step``
    reaches ``total_steps``; the caller advances ``step``, epochs advance here."""
    while state.step < total_steps:
        for batch_index, sentences in iterate_batches(corpus, batch_size, seed, state.epoch, state.batch_in_epoch):
            yield batch_index, sentences
            if state.step >= total_steps:
                return
        state.epoch += 1
        state.batch_in_epoch = 0


def batch_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """Per-batch generator for augmentation (word repetition, masking), so a resumed run draws the same."""
    return np.random.default_rng([seed, epoch, batch_index, 0xA06])
