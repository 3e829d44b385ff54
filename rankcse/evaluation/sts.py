"""SentEval-compatible STS evaluation: STS12–16, STS-B and SICK-R with cosine similarity.

Files are read as SentEval reads them (whitespace tokens re-joined by single spaces, pairs with
an empty gold score dropped, STS-B fields 5–7 and SICK fields 2–4 taken by position), so scores
equal SentEval/SimCSE's on the same encoder. Tasks are data: a folder, file names and a reader,
with a version to bump if the data or its reading ever changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankcse import metrics
from rankcse.errors import DataError
from rankcse.names import SENTEVAL_NAMES, STS_TASKS
from rankcse.paths import DEFAULT_DATA_DIR

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PairSet:
    """Scored sentence pairs of one subset or split."""

    name: str
    sent1: list[str]
    sent2: list[str]
    gold: np.ndarray

    def __len__(self) -> int:
        return len(self.gold)


def _tokens(text: str) -> str:
    # SentEval splits on whitespace and the encoder joins the tokens with single spaces.
    return " ".join(text.split())


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"evaluation file {path} is missing; pass --data-dir pointing at a SentEval data folder")
    return path.read_text(encoding="utf-8").splitlines()


def read_sts_year(folder: Path, subset: str) -> PairSet:
    """One STS12–16 subset: ``STS.input.X.txt`` (tab-separated pair) and ``STS.gs.X.txt`` (score or empty)."""
    inputs = _read_lines(folder / f"STS.input.{subset}.txt")
    scores = _read_lines(folder / f"STS.gs.{subset}.txt")
    if len(inputs) != len(scores):
        raise DataError(f"{folder}/STS.input.{subset}.txt has {len(inputs)} lines but STS.gs.{subset}.txt has {len(scores)}")
    s1, s2, gold = [], [], []
    for line, score in zip(inputs, scores):
        if score == "":
            continue
        a, b = line.split("\t")[:2]
        s1.append(_tokens(a))
        s2.append(_tokens(b))
        gold.append(float(score))
    return PairSet(subset, s1, s2, np.asarray(gold, dtype=np.float64))


def read_columns(path: Path, first: int, skip_header: bool) -> PairSet:
    """A tab-separated file whose score, sentence 1 and sentence 2 sit in fields ``first`` .. ``first+2``."""
    s1, s2, gold = [], [], []
    for i, line in enumerate(_read_lines(path)):
        if skip_header and i == 0:
            continue
        fields = line.strip().split("\t")
        if len(fields) < first + 3:
            continue
        if first == 4:  # STS-B: score, sentence 1, sentence 2
            score, a, b = fields[4], fields[5], fields[6]
        else:  # SICK: sentence A, sentence B, relatedness score
            a, b, score = fields[1], fields[2], fields[3]
        s1.append(_tokens(a))
        s2.append(_tokens(b))
        gold.append(float(score))
    return PairSet(path.name, s1, s2, np.asarray(gold, dtype=np.float64))


@dataclass(frozen=True)
class STSTask:
    """An STS task: a folder of the SentEval layout and the files that make its subsets or splits.

    ``kind="years"`` tasks score subsets and report the "all" aggregate; ``kind="splits"`` tasks
    (STS-B, SICK-R) report the chosen split.
    """

    key: str
    folder: str
    kind: str
    parts: tuple[str, ...]
    version: str = "v1"

    @property
    def senteval_name(self) -> str:
        """SentEval's name of the task (``STSBenchmark``), from :data:`rankcse.names.SENTEVAL_NAMES`."""
        return SENTEVAL_NAMES[self.key]

    def read(self, data_dir: Path, split: str | None = None) -> list[PairSet]:
        """Read the subsets (years) or the one split (``train``/``dev``/``test``)."""
        folder = data_dir / self.folder
        if not folder.is_dir():
            raise DataError(f"evaluation folder {folder} is missing; pass --data-dir pointing at a SentEval data folder")
        if self.kind == "years":
            return [read_sts_year(folder, name) for name in self.parts]
        files = dict(part.split("=") for part in self.parts)
        split = split or "test"
        if self.key == "stsb":
            pairs = read_columns(folder / files[split], first=4, skip_header=False)
        else:
            pairs = read_columns(folder / files[split], first=1, skip_header=True)
        return [PairSet(split, pairs.sent1, pairs.sent2, pairs.gold)]


#: Where each task's files sit in the SentEval layout: ``(folder, kind, parts)``.
_LAYOUT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sts12": ("STS/STS12-en-test", "years", ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews")),
    "sts13": ("STS/STS13-en-test", "years", ("FNWN", "headlines", "OnWN")),
    "sts14": ("STS/STS14-en-test", "years", ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news")),
    "sts15": ("STS/STS15-en-test", "years", ("answers-forums", "answers-students", "belief", "headlines", "images")),
    "sts16": ("STS/STS16-en-test", "years", ("answer-answer", "headlines", "plagiarism", "postediting", "question-question")),
    "stsb": ("STS/STSBenchmark", "splits", ("train=sts-train.csv", "dev=sts-dev.csv", "test=sts-test.csv")),
    "sickr": ("SICK", "splits", ("train=SICK_train.txt", "dev=SICK_trial.txt", "test=SICK_test_annotated.txt")),
}
#: The tasks in :data:`rankcse.names.STS_TASKS` order.
TASKS: dict[str, STSTask] = {key: STSTask(key, *_LAYOUT[key]) for key in STS_TASKS}


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The SentEval data folder: the given one (which must exist) or the packaged copy."""
    path = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist; pass --data-dir pointing at a SentEval data folder (with STS/ and SICK/)")
    return path


def score_pairs(pairs: Sequence[PairSet], vectors: dict[str, np.ndarray]) -> dict:
    """Pearson and Spearman per pair set and their concatenated ("all"), mean and weighted-mean aggregates."""
    system = [metrics.cosine_pairs(np.stack([vectors[s] for s in p.sent1]), np.stack([vectors[s] for s in p.sent2])) for p in pairs]
    gold = [p.gold for p in pairs]
    per = {
        p.name: {"pearson": metrics.pearson(s, p.gold), "spearman": metrics.spearman(s, p.gold), "n": len(p)} for p, s in zip(pairs, system)
    }
    return {
        "parts": per,
        "all": {"pearson": metrics.pearson_concat(system, gold), "spearman": metrics.spearman_concat(system, gold)},
        "mean": {"pearson": metrics.pearson_mean(system, gold), "spearman": metrics.spearman_mean(system, gold)},
        "wmean": {"pearson": metrics.pearson_wmean(system, gold), "spearman": metrics.spearman_wmean(system, gold)},
        "n": int(sum(len(p) for p in pairs)),
    }


def evaluate_sts(embed: Embed, tasks: Sequence[str] = tuple(TASKS), data_dir: str | Path | None = None, split: str = "test") -> dict:
    """Evaluate ``embed`` on STS tasks; every distinct sentence is embedded once.

    Returns ``{"tasks": {key: details}, "scores": {key: headline}, "avg": mean headline}``. The
    headline is the "all" Spearman for STS12–16 and the ``split`` Spearman for STS-B and SICK-R.
    """
    root = resolve_data_dir(data_dir)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DataError(f"unknown STS task {unknown[0]!r}: use any of {', '.join(TASKS)}")
    read = {key: TASKS[key].read(root, split) for key in tasks}
    sentences = sorted({s for pairs in read.values() for p in pairs for s in (*p.sent1, *p.sent2)})
    matrix = np.asarray(embed(sentences), dtype=np.float32)
    vectors = dict(zip(sentences, matrix))
    details, scores = {}, {}
    for key, pairs in read.items():
        details[key] = score_pairs(pairs, vectors)
        details[key]["version"] = TASKS[key].version
        scores[key] = details[key]["all"]["spearman"] if TASKS[key].kind == "years" else details[key]["parts"][split]["spearman"]
    avg = float(np.mean(list(scores.values()))) if scores else float("nan")
    return {"tasks": details, "scores": scores, "avg": avg}
