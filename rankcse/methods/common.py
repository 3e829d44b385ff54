"""Helpers shared by the method files: the two dropout views, BERT-style initialisation, hidden modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rankcse.errors import ConfigError


def two_views(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Both dropout views of a tokenized batch for one encoder pass: every tensor stacked on itself (2N, L); dropout makes
    row i and row N + i differ."""
    return {k: torch.cat([v, v], dim=0) for k, v in tokens.items()}


def split_views(pre: torch.Tensor, post: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(z1, z2, views)`` from the (2N, d) states of :func:`two_views` before and after the head: the two views after the
    head, and the representations RR and the rank metrics may see. ``views`` holds the very tensors ``z1`` and ``z2``, so a
    loss on both accumulates its gradient through one slice each (the same sums, in the same order, as one expression)."""
    z1, z2 = post[:n], post[n:]
    return z1, z2, {"z1_post_mlp": z1, "z1_pre_mlp": pre[:n], "z2_post_mlp": z2}


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
