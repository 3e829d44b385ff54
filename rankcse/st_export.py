"""Make a saved model folder a sentence-transformers model that embeds exactly as rankcse evaluated it.

A rankcse checkpoint is already a Hugging Face model folder; this adds the files
``SentenceTransformer(folder)`` reads: ``modules.json``, ``sentence_bert_config.json`` (max length),
``config_sentence_transformers.json`` (cosine similarity) and the modules after the backbone:

- ``cls_before_pooler`` / ``mean``: a ``Pooling`` module (CLS token or masked mean), no training MLP;
- ``cls`` (``mlp_only_train`` off): ``Pooling`` on CLS, then a ``Dense`` module holding the MLP (Linear + tanh);
- PromptBERT: :class:`rankcse.st_modules.PromptMask` replaces the stock ``Transformer`` (template, [MASK] state,
  optional denoising), followed by ``Dense`` when evaluation uses the MLP.

rankcse scores with cosine on unnormalised vectors, so no ``Normalize`` module is added. The files are written
without importing sentence-transformers; the Pooling config uses the long-standing key names that every
sentence-transformers version reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from rankcse.encoder import MLPHead
from rankcse.provenance import package_version

TRANSFORMER_CLASS = "sentence_transformers.base.modules.transformer.Transformer"
POOLING_CLASS = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
DENSE_CLASS = "sentence_transformers.base.modules.dense.Dense"
PROMPT_CLASS = "rankcse.st_modules.PromptMask"


def _write_json(path: Path, data: dict[str, Any] | list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _pooling_config(dim: int, mode: str) -> dict[str, Any]:
    """Pooling config in the boolean-flag form (read by sentence-transformers 2.x to 6.x)."""
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }


def _write_dense(folder: Path, head: torch.nn.Module) -> None:
    """The MLP head as a ``Dense`` module (``linear`` weights, tanh)."""
    linear = head.dense
    _write_json(
        folder / "config.json",
        {
            "in_features": linear.in_features,
            "out_features": linear.out_features,
            "bias": linear.bias is not None,
            "activation_function": "torch.nn.modules.activation.Tanh",
        },
    )
    tensors = {"linear.weight": linear.weight.detach().cpu().contiguous()}
    if linear.bias is not None:
        tensors["linear.bias"] = linear.bias.detach().cpu().contiguous()
    save_file(tensors, str(folder / "model.safetensors"))


def _takes_pooling_flag(backbone: torch.nn.Module) -> bool:
    """Whether the backbone class accepts ``add_pooling_layer`` (BERT-like): then sentence-transformers loads it without one."""
    import inspect

    return "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters


def write_sentence_transformers(method: torch.nn.Module, folder: Path) -> list[dict[str, Any]]:
    """Write the sentence-transformers files for ``method``'s evaluation representation into ``folder``; returns the module list."""
    folder = Path(folder)
    encoder = method.encoder
    spec = method.representation_spec()
    sbert: dict[str, Any] = {"max_seq_length": int(encoder.eval_max_length), "do_lower_case": False}
    if _takes_pooling_flag(encoder.backbone):
        sbert["model_args"] = {"add_pooling_layer": False}
    modules: list[dict[str, Any]] = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_CLASS}]
    if spec.get("kind") == "prompt_mask":
        template = method.templates[0]
        modules[0]["type"] = PROMPT_CLASS
        sbert.update(
            {
                "template_prefix": list(template.prefix),
                "template_suffix": list(template.suffix),
                "mask_in_prefix": template.mask_in_prefix,
                "mask_in_suffix": template.mask_in_suffix,
                "add_period": bool(spec["add_period"]),
                "denoise": bool(spec["denoise"]),
            }
        )
        use_head, mode = bool(spec["mlp"]), None
    else:
        mode = "mean" if spec["pooler"] == "mean" else "cls"
        use_head = spec["pooler"] == "cls"
    if use_head and not isinstance(encoder.head, MLPHead):  # checked before anything is written
        raise ValueError(f"evaluation uses a {type(encoder.head).__name__} head, which has no sentence-transformers module")
    if mode is not None:
        _write_json(folder / "1_Pooling" / "config.json", _pooling_config(encoder.hidden_size, mode))
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING_CLASS})
    if use_head:
        _write_dense(folder / "2_Dense", encoder.head)
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "2_Dense", "type": DENSE_CLASS})
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", sbert)
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "__version__": {
                "rankcse": package_version("rankcse"),
                "transformers": package_version("transformers"),
                "pytorch": torch.__version__,
            },
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    return modules


def needs_custom_module(folder: Path) -> bool:
    """Whether a folder's ``modules.json`` names a rankcse module class (sentence-transformers then needs ``trust_remote_code=True``)."""
    path = Path(folder) / "modules.json"
    return path.is_file() and any(m["type"].startswith("rankcse.") for m in json.loads(path.read_text()))
