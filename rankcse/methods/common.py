"""Helpers shared by the method files: padding token-id lists, BERT-style initialisation, hidden modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rankcse.errors import ConfigError


def pad_ids(rows: Sequence[Sequence[int]], tokenizer: object) -> dict[str, torch.Tensor]:
    """Right-pad token-id lists into ``input_ids``/``attention_mask`` (and zero ``token_type_ids`` where the model takes them)."""
    width = max(len(r) for r in rows)
    pad_id = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        batch["token_type_ids"] = torch.zeros_like(input_ids)
    return batch


def special_token_ids(tokenizer: object) -> tuple[int, int]:
    """The ids a tokenizer puts around a single sentence (BERT: [CLS] and [SEP]; RoBERTa: <s> and </s>)."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    if len(ids) != 2:
        raise ConfigError(f"the tokenizer wraps a sentence in {len(ids)} special tokens, not 2 ([CLS] ... [SEP]); use a BERT-like model")
    return int(ids[0]), int(ids[1])


def init_bert_style(module: nn.Module, std: float) -> None:
    """Re-initialise like BERT's ``_init_weights``: Linear/Embedding ~ N(0, std), zero biases and padding rows, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def backbone_layers(backbone: nn.Module, method: str) -> nn.ModuleList:
    """The transformer blocks of a BERT-like backbone (``backbone.encoder.layer``)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"method {method!r} needs a BERT-like encoder (with encoder.layer); {type(backbone).__name__} has none")
    return layers


class Hidden:
    """Holds a module outside its owner's module tree.

    It is then absent from ``state_dict()``, ``parameters()`` and ``train()/eval()`` of the owner:
    used for training-only networks that are not trained by the optimiser (ESimCSE's momentum
    encoder, saved through ``extra_state``; InfoCSE's frozen lower layers, rebuilt from the initial
    checkpoint). Owners forward device/dtype moves with :meth:`apply`.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply a ``Module._apply`` function (what ``.to()``, ``.cuda()``, ``.float()`` use)."""
        self.module._apply(fn)


def module_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
