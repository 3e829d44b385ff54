"""Helpers for the method tests: tiny BERT folders (optionally without dropout or with an MLM head) and plain formulas."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from rankcse.paths import packaged_model_path

SENTENCES = [
    "a man is playing a guitar .",
    "the cat sits on the mat while the dog sleeps by the warm fire .",
    "children are playing in the park",
    "she reads a book in the library ?",
    "the stock market fell sharply today after the announcement .",
]


def save_tiny_bert(folder: Path, dropout: float = 0.1, mlm_head: bool = False, seed: int = 0) -> Path:
    """A 2-layer, 32-dim BERT with random weights and the packaged tokenizer (``mlm_head``: a BertForMaskedLM checkpoint)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    model = BertForMaskedLM(config) if mlm_head else BertModel(config, add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity written out: a_i·b_j / (|a_i| |b_j|)."""
    return (a @ b.T) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True).T)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of log Σ_j exp(l_ij) − l_i,target."""
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(logits.shape[0]), targets]).mean()


def mlp_head(method, x: torch.Tensor) -> torch.Tensor:
    """SimCSE's head as a formula: tanh(x Wᵀ + b)."""
    dense = method.encoder.head.dense
    return torch.tanh(x @ dense.weight.T + dense.bias)


def cls_states(method, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last-layer [CLS] states straight from the Hugging Face backbone."""
    return method.encoder.backbone(**tokens).last_hidden_state[:, 0]


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU."""
    return F.gelu(x)
