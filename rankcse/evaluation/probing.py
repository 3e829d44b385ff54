"""Linguistic probing: SentEval's ten probing tasks and their generated surrogates, scored as SentEval does.

A probing task is a file of ``split<TAB>label<TAB>sentence`` lines (split ``tr``/``va``/``te``),
read from any folder (``<dir>/probing/<file>`` as in SentEval's layout, or ``<dir>/<file>``). The
probe is a logistic regression on frozen sentence embeddings: one model per C of the grid on the
train split, C chosen by validation accuracy, accuracy on the test split reported
(:func:`rankcse.evaluation.logreg.split_classifier`, SentEval's ``SplitClassifier``). Labels are
numbered in sorted order of the train labels, as SentEval does.

Two classifier settings (:data:`SETTINGS`):

- ``full`` -- SentEval's: every example, C in {0.25, 0.5, 1, 2, 4, 8}, lbfgs with scikit-learn's
  defaults (100 iterations, tol 1e-4). Used for a final evaluation.
- ``fast`` -- for probing inside a training run: a fixed stratified subsample (1,000 train, 300
  valid, 700 test per task; the same examples at every step and in every trial), C in {0.25, 1, 4},
  tol 1e-3. Cheap enough to run every few evaluations (see ``bench/bench_probing.py``); its
  accuracies are lower than ``full``'s and comparable only with each other.

Tasks whose key ends in ``_gen`` are surrogates generated from raw sentences
(:mod:`rankcse.evaluation.probing_gen`), never SentEval's data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rankcse.errors import ConfigError, DataError
from rankcse.evaluation.logreg import C_GRID_SPLIT, Solver, split_classifier
from rankcse.evaluation.probing_gen import DEFAULT_SEED, GENERATORS, SPLITS, GeneratedSplit, GenSizes, generate_from_corpus
from rankcse.io import write_text_atomic

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], Any]
FILE_SPLITS = {"tr": "train", "va": "valid", "te": "test"}
METRIC_PREFIX = "probing/"


@dataclass(frozen=True)
class ProbingSpec:
    """A probing task: key, the SentEval task it is (or stands in for), Conneau et al.'s group, file."""

    key: str
    senteval_name: str
    group: str
    file: str
    surrogate: bool = False


SENTEVAL_PROBING: tuple[ProbingSpec, ...] = (
    ProbingSpec("sentlen", "Length", "surface", "sentence_length.txt"),
    ProbingSpec("wc", "WordContent", "surface", "word_content.txt"),
    ProbingSpec("treedepth", "Depth", "syntactic", "tree_depth.txt"),
    ProbingSpec("topconst", "TopConstituents", "syntactic", "top_constituents.txt"),
    ProbingSpec("bshift", "BigramShift", "syntactic", "bigram_shift.txt"),
    ProbingSpec("tense", "Tense", "semantic", "past_present.txt"),
    ProbingSpec("subjnum", "SubjNumber", "semantic", "subj_number.txt"),
    ProbingSpec("objnum", "ObjNumber", "semantic", "obj_number.txt"),
    ProbingSpec("somo", "OddManOut", "semantic", "odd_man_out.txt"),
    ProbingSpec("coordinv", "CoordinationInversion", "semantic", "coordination_inversion.txt"),
)
GENERATED_PROBING: tuple[ProbingSpec, ...] = tuple(
    ProbingSpec(g.key, g.stands_for, g.group, f"{g.key}.txt", surrogate=True) for g in GENERATORS.values()
)
PROBING_TASKS: dict[str, ProbingSpec] = {s.key: s for s in SENTEVAL_PROBING + GENERATED_PROBING}
#: Names accepted for a set of tasks.
TASK_SETS = {"senteval": [s.key for s in SENTEVAL_PROBING], "generated": [s.key for s in GENERATED_PROBING]}
_ALIASES = {s.senteval_name.lower(): s.key for s in SENTEVAL_PROBING}


def expand_tasks(names: Sequence[str]) -> list[str]:
    """Task keys for ``names`` (keys, SentEval names, or the sets ``senteval`` / ``generated``), in order, once each."""
    out: list[str] = []
    for name in names:
        low = name.lower()
        keys = TASK_SETS.get(low) or [_ALIASES.get(low, low)]
        for key in keys:
            if key not in PROBING_TASKS:
                raise ConfigError(f"unknown probing task {name!r}: use any of {', '.join(PROBING_TASKS)}, or 'senteval' / 'generated'")
            if key not in out:
                out.append(key)
    return out


def group_of(key: str) -> str | None:
    """Conneau et al.'s group (surface / syntactic / semantic) of a task key, None if unknown."""
    spec = PROBING_TASKS.get(key)
    return spec.group if spec else None


# -- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbingData:
    """One task's examples: ``splits[split] = (sentences, labels)`` for train / valid / test."""

    spec: ProbingSpec
    splits: dict[str, tuple[list[str], list[str]]]
    source: str

    def sizes(self) -> dict[str, int]:
        return {split: len(self.splits[split][0]) for split in SPLITS}


def read_probing_file(path: str | Path) -> dict[str, tuple[list[str], list[str]]]:
    """Read ``split<TAB>label<TAB>sentence`` lines; the sentence is the last field, re-joined on single spaces."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"probing file {path} is missing; pass --probing-data-dir pointing at SentEval's data folder (with probing/)")
    out: dict[str, tuple[list[str], list[str]]] = {split: ([], []) for split in SPLITS}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.rstrip().split("\t")
            if not line.strip():
                continue
            if len(fields) < 3 or fields[0] not in FILE_SPLITS:
                raise DataError(f"{path} line {number}: expected 'tr|va|te<TAB>label<TAB>sentence'")
            sentences, labels = out[FILE_SPLITS[fields[0]]]
            sentences.append(" ".join(fields[-1].split()))
            labels.append(fields[1])
    for split, (sentences, _) in out.items():
        if not sentences:
            raise DataError(f"probing file {path} has no '{next(k for k, v in FILE_SPLITS.items() if v == split)}' ({split}) lines")
    return out


def write_probing_file(data: ProbingData, path: str | Path) -> Path:
    """Write a task in SentEval's format (tr, then va, then te lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    short = {v: k for k, v in FILE_SPLITS.items()}
    lines = [f"{short[split]}\t{label}\t{sentence}" for split in SPLITS for sentence, label in zip(*data.splits[split])]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def find_probing_file(data_dir: str | Path, spec: ProbingSpec) -> Path:
    """``<dir>/probing/<file>`` (SentEval's layout) or ``<dir>/<file>``."""
    root = Path(data_dir).expanduser()
    for candidate in (root / "probing" / spec.file, root / spec.file):
        if candidate.is_file():
            return candidate
    raise DataError(f"probing task {spec.key} needs {spec.file} in {root}/probing or {root}; pass --probing-data-dir (SentEval's data)")


def load_task(
    key: str, data_dir: str | Path | None = None, corpus: str | Path | None = None, seed: int = DEFAULT_SEED, sizes: GenSizes = GenSizes()
) -> ProbingData:
    """A SentEval task from ``data_dir``, or a surrogate generated from ``corpus`` (default: the packaged one)."""
    spec = PROBING_TASKS[expand_tasks([key])[0]]
    if spec.surrogate:
        generated: dict[str, GeneratedSplit] = generate_from_corpus(spec.key, corpus, seed, sizes)
        splits = {split: (list(g.sentences), list(g.labels)) for split, g in generated.items()}
        return ProbingData(spec, splits, f"generated from {corpus or 'the packaged corpus'} (seed {seed})")
    if data_dir is None:
        raise ConfigError(f"probing task {spec.key} is SentEval's; pass --probing-data-dir (SentEval's data), or use generated tasks")
    path = find_probing_file(data_dir, spec)
    return ProbingData(spec, read_probing_file(path), str(path))


# -- settings and subsampling ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """Classifier settings: per-split subsample caps (None = all), the C grid, the lbfgs solver."""

    name: str
    max_train: int | None = None
    max_valid: int | None = None
    max_test: int | None = None
    c_grid: tuple[float, ...] = C_GRID_SPLIT
    solver: Solver = field(default_factory=Solver)

    def caps(self) -> dict[str, int | None]:
        return {"train": self.max_train, "valid": self.max_valid, "test": self.max_test}


FULL = ProbeSettings("full")
FAST = ProbeSettings("fast", max_train=1000, max_valid=300, max_test=700, c_grid=(0.25, 1.0, 4.0), solver=Solver(max_iter=100, tol=1e-3))
SETTINGS = {s.name: s for s in (FULL, FAST)}
SUBSAMPLE_SEED = 0


def stratified_subset(labels: Sequence[str], n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of ``n`` examples keeping each label's share (largest remainders); all if ``n`` is None or too big."""
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    classes, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    exact = counts * n / total
    quota = np.floor(exact).astype(int)
    for c in sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))[: n - int(quota.sum())]:
        quota[c] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[: quota[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(chosen))


def subsample(data: ProbingData, settings: ProbeSettings, seed: int = SUBSAMPLE_SEED) -> ProbingData:
    """The task cut to the settings' caps by a stratified, seeded subsample of each split."""
    caps = settings.caps()
    if all(cap is None for cap in caps.values()):
        return data
    rng = np.random.default_rng(seed)
    splits = {}
    for split in SPLITS:
        sentences, labels = data.splits[split]
        keep = stratified_subset(labels, caps[split], rng)
        splits[split] = ([sentences[i] for i in keep], [labels[i] for i in keep])
    return replace(data, splits=splits)


# -- scoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one task (accuracies as fractions) and what they were computed on."""

    task: str
    group: str
    surrogate: bool
    acc: float
    dev_acc: float
    c: float | None
    n_train: int
    n_valid: int
    n_test: int
    n_classes: int
    chance: float
    not_converged: int
    settings: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _encode_labels(data: ProbingData) -> dict[str, np.ndarray]:
    names = sorted(set(data.splits["train"][1]))
    index = {name: i for i, name in enumerate(names)}
    out = {}
    for split in SPLITS:
        unknown = sorted(set(data.splits[split][1]) - index.keys())
        if unknown:
            raise DataError(f"probing task {data.spec.key}: {split} label {unknown[0]!r} never occurs in train")
        out[split] = np.array([index[label] for label in data.splits[split][1]])
    return out


def score_tasks(embed: Embed, tasks: Sequence[ProbingData], settings: ProbeSettings) -> dict[str, ProbeResult]:
    """Embed every distinct sentence of ``tasks`` once, then fit and score one probe per task."""
    unique = sorted({s for data in tasks for split in SPLITS for s in data.splits[split][0]})
    vectors = np.asarray(embed(unique), dtype=np.float32)
    row = {s: i for i, s in enumerate(unique)}
    results = {}
    for data in tasks:
        y = _encode_labels(data)
        if len(np.unique(y["train"])) < 2:
            raise DataError(f"probing task {data.spec.key}: the train split has a single label")
        X = {split: vectors[[row[s] for s in data.splits[split][0]]] for split in SPLITS}
        score = split_classifier(X, y, settings.c_grid, settings.solver)
        counts = np.bincount(y["test"])
        results[data.spec.key] = ProbeResult(
            task=data.spec.key,
            group=data.spec.group,
            surrogate=data.spec.surrogate,
            acc=score.test_acc,
            dev_acc=score.dev_acc,
            c=score.c,
            n_train=len(y["train"]),
            n_valid=len(y["valid"]),
            n_test=len(y["test"]),
            n_classes=int(len(np.unique(y["train"]))),
            chance=float(counts.max() / counts.sum()),
            not_converged=score.not_converged,
            settings=settings.name,
        )
    return results


def evaluate_probing(
    embed: Embed,
    tasks: Sequence[str],
    settings: str | ProbeSettings = "full",
    data_dir: str | Path | None = None,
    corpus: str | Path | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, ProbeResult]:
    """Load (or generate), subsample per ``settings`` and score the probing ``tasks``."""
    chosen = SETTINGS[settings] if isinstance(settings, str) else settings
    data = [subsample(load_task(key, data_dir, corpus, seed), chosen) for key in expand_tasks(tasks)]
    return score_tasks(embed, data, chosen)


# -- inside a training run -------------------------------------------------------------------------


class TrainingProbe:
    """Probing inside a training run: the ``fast`` setting every ``every_evals`` evaluations, ``full`` at the end.

    Tasks are loaded (or generated) and subsampled once, when the run is set up, so bad input fails
    before training starts and every evaluation probes the same examples.

    Args:
        tasks: task keys or names (see :func:`expand_tasks`).
        every_evals: probe at steps that are multiples of ``every_evals * eval_every`` (step 0
            included) and at the last step; 0 probes only the final checkpoint.
        eval_every: the run's evaluation interval in steps.
        data_dir: folder with SentEval's probing files (needed for SentEval's tasks only).
        corpus: raw sentences for the generated tasks (default: the packaged corpus).
    """

    def __init__(
        self, tasks: Sequence[str], every_evals: int, eval_every: int, data_dir: str | Path | None = None, corpus: str | Path | None = None
    ) -> None:
        self.keys = expand_tasks(tasks)
        self.every_steps = every_evals * eval_every
        self.data_dir, self.corpus = data_dir, corpus
        self.full_data = [load_task(key, data_dir, corpus) for key in self.keys]
        self.fast_data = [subsample(data, FAST) for data in self.full_data]

    def due(self, step: int, at_end: bool) -> bool:
        """Whether the evaluation at ``step`` includes probing."""
        return at_end or (self.every_steps > 0 and step % self.every_steps == 0)

    def empty_record(self) -> dict[str, float | None]:
        """The record keys with no value, for evaluations without probing (a stable schema)."""
        return {**{f"{METRIC_PREFIX}{key}": None for key in self.keys}, "probing_seconds": None}

    def __call__(self, embed: Embed) -> dict[str, float]:
        """``probing/<task>`` test accuracies (fast setting) and the seconds it took."""
        started = time.perf_counter()
        results = score_tasks(embed, self.fast_data, FAST)
        out: dict[str, float] = {f"{METRIC_PREFIX}{key}": r.acc for key, r in results.items()}
        out["probing_seconds"] = time.perf_counter() - started
        log.info("probing (fast): %s | %.1fs", " | ".join(f"{k} {100 * r.acc:.1f}" for k, r in results.items()), out["probing_seconds"])
        return out

    def final(self, embed: Embed) -> dict[str, Any]:
        """Full-setting accuracies (``probing/<task>``) and per-task details (``probing``) for final.json."""
        started = time.perf_counter()
        results = score_tasks(embed, self.full_data, FULL)
        out: dict[str, Any] = {f"{METRIC_PREFIX}{key}": r.acc for key, r in results.items()}
        out["probing"] = {key: {**r.to_dict(), "source": d.source} for (key, r), d in zip(results.items(), self.full_data)}
        out["probing_seconds"] = time.perf_counter() - started
        log.info("probing (full, final checkpoint): %s", " | ".join(f"{k} {100 * r.acc:.2f}" for k, r in results.items()))
        return out
