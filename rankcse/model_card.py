"""The model card (``README.md``) of a saved model folder: what was trained, how, and what it scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankcse import __version__
from rankcse.names import PRIMARY, STS_TASKS

CARD_FILE = "README.md"
#: The final scores a card shows: the STS tasks and their average.
SCORE_KEYS = (*STS_TASKS, "avg")


def _fmt(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, int | float) and value is not None else "-"


def render(meta: dict[str, Any], final: dict[str, Any] | None = None, custom_module: bool = False) -> str:
    """Markdown card from a checkpoint's ``rankcse.json`` (and the run's ``final.json`` once the final evaluation ran)."""
    cfg = meta.get("train_config", {})
    method = meta.get("method", cfg.get("method", "?"))
    load = 'SentenceTransformer("PATH", trust_remote_code=True)' if custom_module else 'SentenceTransformer("PATH")'
    note = (
        "\nThe first module is `rankcse.st_modules.PromptMask` (the prompt template and its [MASK] state): it needs rankcse "
        "installed, and sentence-transformers >= 6 imports a class outside its own package only with `trust_remote_code=True` "
        "(nothing is downloaded; this folder holds no code).\n"
        if custom_module
        else ""
    )
    rows = [
        ("method", method),
        ("method settings", cfg.get("method_args") or "defaults"),
        ("base model", cfg.get("model", "?")),
        ("evaluation representation", meta.get("eval_representation", "?")),
        ("pooler (training)", f"{cfg.get('pooler')} (mlp_only_train={cfg.get('mlp_only_train')})"),
        ("RR", f"coef {cfg.get('rr_coef')}, kind {cfg.get('rr_kind')}, on {cfg.get('rr_on')}, schedule {cfg.get('rr_schedule')}"),
        ("seed", cfg.get("seed")),
        ("steps", f"best checkpoint at step {meta.get('step')} of {final.get('steps') if final else cfg.get('max_steps') or '?'}"),
        ("batch size / learning rate / temperature", f"{cfg.get('batch_size')} / {cfg.get('learning_rate')} / {cfg.get('temperature')}"),
        ("max length (training / encoding)", f"{cfg.get('max_len')} / model limit"),
        ("STS-B dev (Spearman x 100) at this checkpoint", _fmt(meta.get(PRIMARY.name))),
        ("rankcse version", __version__),
    ]
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, rankcse, " + str(method) + "]",
        "---",
        "",
        f"# {method} fine-tuned with rankcse",
        "",
        f"Contrastive sentence-embedding fine-tuning ({method}) by rankcse {__version__}, the best checkpoint by STS-B dev.",
        f"Load it with sentence-transformers: `{load}`; its embeddings are the ones rankcse evaluated "
        "(score pairs with cosine similarity). `rankcse eval --model PATH` scores it.",
        note,
        "| setting | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
    ]
    scores = {k: final[k] for k in SCORE_KEYS if final and isinstance(final.get(k), int | float)}
    if scores:
        lines += [
            "## Final scores (Spearman x 100, SentEval 'all' for STS12-16, test splits)",
            "",
            "| " + " | ".join(scores) + " |",
            "|" + " --- |" * len(scores),
            "| " + " | ".join(_fmt(v) for v in scores.values()) + " |",
            "",
        ]
    else:
        lines += ["Final test scores: not run for this checkpoint (see the run's `final.json`).", ""]
    return "\n".join(lines)


def write(folder: Path, meta: dict[str, Any], final: dict[str, Any] | None = None, custom_module: bool = False) -> None:
    """Write ``README.md`` into a model folder."""
    (Path(folder) / CARD_FILE).write_text(render(meta, final, custom_module))
