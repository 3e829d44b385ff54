"""SentEval's transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC): a logistic regression on frozen embeddings.

Files are read as SentEval reads them (encodings, field positions, MRPC's header line, TREC's
coarse label, empty lines kept as empty sentences) and put in SentEval's order (a stable sort by
token count, then label), because the cross-validation folds depend on the order. Each task uses
SentEval's protocol (see :mod:`rankcse.evaluation.logreg`): 10-fold nested cross-validation for
MR/CR/SUBJ/MPQA, the train/dev/test split for SST-2, k-fold model selection on train then the
test set for TREC and MRPC; MRPC pairs become ``[|a - b|, a * b]`` features. ``kfold`` is 10 as in
SimCSE's ``--mode test`` (SentEval's own default is 5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankcse.errors import ConfigError, DataError
from rankcse.evaluation.logreg import C_GRID_KFOLD, C_GRID_SPLIT, Solver, inner_kfold_classifier, kfold_classifier, split_classifier
from rankcse.paths import DEFAULT_DATA_DIR

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], "np.ndarray"]
TREC_CLASSES = {"ABBR": 0, "DESC": 1, "ENTY": 2, "HUM": 3, "LOC": 4, "NUM": 5}


@dataclass(frozen=True)
class TransferTask:
    """A transfer task: its SentEval name, folder (SentEval layout) and protocol."""

    key: str
    senteval_name: str
    folder: str
    protocol: str  # inner_kfold | split | kfold | pairs_kfold
    files: tuple[str, ...]
    version: str = "v1"


TRANSFER_TASKS: dict[str, TransferTask] = {
    t.key: t
    for t in (
        TransferTask("mr", "MR", "MR", "inner_kfold", ("rt-polarity.pos", "rt-polarity.neg")),
        TransferTask("cr", "CR", "CR", "inner_kfold", ("custrev.pos", "custrev.neg")),
        # SentEval gives label 1 to the objective sentences
        TransferTask("subj", "SUBJ", "SUBJ", "inner_kfold", ("subj.objective", "subj.subjective")),
        TransferTask("mpqa", "MPQA", "MPQA", "inner_kfold", ("mpqa.pos", "mpqa.neg")),
        TransferTask("sst2", "SST2", "SST/binary", "split", ("sentiment-train", "sentiment-dev", "sentiment-test")),
        TransferTask("trec", "TREC", "TREC", "kfold", ("train_5500.label", "TREC_10.label")),
        TransferTask("mrpc", "MRPC", "MRPC", "pairs_kfold", ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt")),
    )
}
_ALIASES = {t.senteval_name.lower(): t.key for t in TRANSFER_TASKS.values()} | {"sst-2": "sst2", "sst": "sst2"}


def transfer_task(name: str) -> TransferTask:
    """Look up a task by key or SentEval name (case-insensitive)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in TRANSFER_TASKS:
        raise ConfigError(f"unknown transfer task {name!r}: use any of {', '.join(TRANSFER_TASKS)}")
    return TRANSFER_TASKS[key]


# -- reading, as SentEval does ---------------------------------------------------------------------


def _open_lines(path: Path, encoding: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"transfer-task file {path} is missing; pass --data-dir pointing at a SentEval data folder")
    return path.read_text(encoding=encoding).splitlines()


def _sorted_by_length(rows: list[tuple], n_token_fields: int) -> list[tuple]:
    # SentEval sorts (stable) by the token counts of the sentence field(s), then by the label.
    return sorted(rows, key=lambda r: (*(len(r[i]) for i in range(n_token_fields)), r[-1]))


def read_binary(folder: Path, first: str, second: str) -> tuple[list[str], np.ndarray]:
    """MR/CR/SUBJ/MPQA: Latin-1 lines (empty ones kept); ``first`` is label 1, ``second`` label 0."""
    rows = [(line.split(), 1) for line in _open_lines(folder / first, "latin-1")]
    rows += [(line.split(), 0) for line in _open_lines(folder / second, "latin-1")]
    rows = _sorted_by_length(rows, 1)
    return [" ".join(tokens) for tokens, _ in rows], np.array([label for _, label in rows])


def read_sst2(folder: Path, files: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """SST-2: ``sentence<TAB>label`` per line, three files for train / valid / test."""
    out = {}
    for split, name in zip(("train", "valid", "test"), files):
        rows = []
        for line in _open_lines(folder / name, "utf-8"):
            fields = line.strip().split("\t")
            rows.append((fields[0].split(), int(fields[1])))
        rows = _sorted_by_length(rows, 1)
        out[split] = ([" ".join(t) for t, _ in rows], np.array([y for _, y in rows]))
    return out


def read_trec(folder: Path, files: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """TREC: ``COARSE:fine question`` per line (Latin-1); the coarse class is the label."""
    out = {}
    for split, name in zip(("train", "test"), files):
        rows = []
        for i, line in enumerate(_open_lines(folder / name, "latin-1"), 1):
            target, sample = line.strip().split(":", 1)
            if target not in TREC_CLASSES:
                raise DataError(f"{folder / name} line {i}: unknown TREC class {target!r}")
            rows.append((sample.split(" ", 1)[1].split(), TREC_CLASSES[target]))
        rows = _sorted_by_length(rows, 1)
        out[split] = ([" ".join(t) for t, _ in rows], np.array([y for _, y in rows]))
    return out


def read_mrpc(folder: Path, files: Sequence[str]) -> dict[str, tuple[list[str], list[str], np.ndarray]]:
    """MRPC: tab-separated, header line skipped; label in field 1, the two sentences in fields 4 and 5."""
    out = {}
    for split, name in zip(("train", "test"), files):
        rows = []
        for line in _open_lines(folder / name, "utf-8")[1:]:
            fields = line.strip().split("\t")
            rows.append((fields[3].split(), fields[4].split(), int(fields[0])))
        rows = _sorted_by_length(rows, 2)
        out[split] = ([" ".join(a) for a, _, _ in rows], [" ".join(b) for _, b, _ in rows], np.array([y for _, _, y in rows]))
    return out


def check_transfer_data(tasks: Sequence[str], data_dir: str | Path | None = None) -> None:
    """Fail early (before training) when a transfer task's files are missing."""
    root = Path(data_dir or DEFAULT_DATA_DIR).expanduser()
    for name in tasks:
        task = transfer_task(name)
        for file in task.files:
            if not (root / task.folder / file).is_file():
                raise DataError(
                    f"transfer task {task.senteval_name} needs {root / task.folder / file}; pass --data-dir (a SentEval data folder)"
                )


def read_task(task: TransferTask, data_dir: str | Path | None = None) -> dict:
    """The task's sentences and labels in SentEval's order: ``{split: (sentences..., labels)}``."""
    folder = Path(data_dir or DEFAULT_DATA_DIR).expanduser() / task.folder
    if not folder.is_dir():
        raise DataError(f"transfer-task folder {folder} is missing; pass --data-dir pointing at a SentEval data folder")
    if task.protocol == "inner_kfold":
        return {"all": read_binary(folder, *task.files)}
    if task.protocol == "split":
        return read_sst2(folder, task.files)
    if task.protocol == "kfold":
        return read_trec(folder, task.files)
    return read_mrpc(folder, task.files)


# -- scoring ---------------------------------------------------------------------------------------


def _embed_unique(embed: Embed, sentences: Sequence[str]) -> dict[str, np.ndarray]:
    unique = sorted(set(sentences))
    vectors = np.asarray(embed(unique), dtype=np.float32)
    return dict(zip(unique, vectors))


def evaluate_task(
    task: TransferTask, embed: Embed, data_dir: str | Path | None = None, kfold: int = 10, solver: Solver = Solver()
) -> dict[str, float]:
    """Score one task: test accuracy ``acc`` and model-selection accuracy ``dev_acc`` (fractions), sizes, MRPC's F1."""
    data = read_task(task, data_dir)
    sentences = [s for split in data.values() for part in split[:-1] for s in part]
    table = _embed_unique(embed, sentences)
    feats = lambda xs: np.stack([table[s] for s in xs])  # noqa: E731
    if task.protocol == "inner_kfold":
        texts, y = data["all"]
        score = inner_kfold_classifier(feats(texts), y, kfold, C_GRID_SPLIT, solver)
        sizes = {"n_train": len(y), "n_test": len(y)}
    elif task.protocol == "split":
        X = {k: feats(v[0]) for k, v in data.items()}
        score = split_classifier(X, {k: v[1] for k, v in data.items()}, C_GRID_SPLIT, solver)
        sizes = {"n_train": len(data["train"][1]), "n_valid": len(data["valid"][1]), "n_test": len(data["test"][1])}
    elif task.protocol == "kfold":
        (tr_x, tr_y), (te_x, te_y) = data["train"], data["test"]
        score = kfold_classifier(feats(tr_x), tr_y, feats(te_x), te_y, kfold, C_GRID_KFOLD, solver)
        sizes = {"n_train": len(tr_y), "n_test": len(te_y)}
    else:
        pair_feats = lambda a, b: np.c_[np.abs(feats(a) - feats(b)), feats(a) * feats(b)]  # noqa: E731
        (tr_a, tr_b, tr_y), (te_a, te_b, te_y) = data["train"], data["test"]
        score = kfold_classifier(pair_feats(tr_a, tr_b), tr_y, pair_feats(te_a, te_b), te_y, kfold, C_GRID_KFOLD, solver)
        sizes = {"n_train": len(tr_y), "n_test": len(te_y)}
    out: dict[str, float] = {"acc": score.test_acc, "dev_acc": score.dev_acc, **sizes, "not_converged": score.not_converged}
    if score.c is not None:
        out["c"] = score.c
    if task.protocol == "pairs_kfold":
        from sklearn.metrics import f1_score

        out["f1"] = round(round(100 * f1_score(data["test"][2], score.predictions), 2) / 100, 4)
    return out


def evaluate_transfer(
    embed: Embed, tasks: Sequence[str], data_dir: str | Path | None = None, kfold: int = 10, solver: Solver = Solver()
) -> dict[str, dict[str, float]]:
    """Score several tasks (keys or SentEval names); returns ``{key: {acc, dev_acc, n_..., [f1]}}``."""
    if kfold < 2:
        raise ConfigError(f"kfold must be >= 2, got {kfold}")
    specs = [transfer_task(name) for name in tasks]
    results = {}
    for task in specs:
        started = time.perf_counter()
        results[task.key] = evaluate_task(task, embed, data_dir, kfold, solver)
        log.info("transfer %s: acc %.2f (%.0fs)", task.senteval_name, 100 * results[task.key]["acc"], time.perf_counter() - started)
    return results
