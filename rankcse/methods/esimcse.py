"""ESimCSE (Wu, Gao, Zang, Han, Wang & Hu, COLING 2022): word repetition + momentum-contrast queue.

The positive of a sentence is a copy with a few of its tokens duplicated in place (so the two
views differ in length, not only in dropout); extra negatives come from a FIFO queue of earlier
sentences encoded by a momentum (EMA) copy of the encoder:

    ℓ_i = −log e^{s(z_i, z_i⁺)} / ( Σ_j e^{s(z_i, z_j⁺)} + Σ_k e^{s(z_i, q_k)} ),  s = cos/τ.

Source: caskcsg/sentemb @5eeec55, ``ESimCSE/``: ``esimcse/models.py::cl_forward`` (EMA update after
the online forward; queue negatives appended to the rows of z1), ``esimcse/trainers.py::compute_loss``
(after the loss, the batch's original sentences are re-encoded by the momentum encoder in eval mode
through the online MLP, detached and pushed; queue emptied at each epoch start),
``train.py::prepare_features`` (repetition, ``dup_type=bpe``) and ``run.sh`` (bert-base-uncased recipe).

Deviation (documented, with a flag): the official ``BertForCL.__init__`` copies the momentum
encoder before ``from_pretrained`` loads the weights, so it starts from random weights and only
approaches the online encoder through the EMA. ``momentum_init="pretrained"`` (default) starts it
from the pretrained weights, as the paper describes; ``"random"`` reproduces the code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankcse.batching import pad_ids
from rankcse.errors import ConfigError
from rankcse.losses import info_nce_with_negatives
from rankcse.methods.base import Batch, Method, MethodArgs, MethodOutput, Recipe, register_method
from rankcse.methods.common import Hidden, init_bert_style

DUP_TYPES = ("bpe", "word")
MOMENTUM_INITS = ("pretrained", "random")


@dataclass
class ESimCSEArgs(MethodArgs):
    """ESimCSE settings; defaults are ``ESimCSE/run.sh`` for bert-base-uncased."""

    dup_rate: float = 0.32  # run.sh dup_rate
    dup_type: str = "bpe"  # run.sh dup_type: repeat word pieces ("word": whitespace words, train.py's other branch)
    max_dup: int = 10  # train.py::prepare_features caps the number of repeated tokens at 10
    queue_size: int = 160  # run.sh neg_size; 0 turns the momentum encoder and queue off
    momentum: float = 0.995  # run.sh momentum
    momentum_init: str = "pretrained"  # "random" = the official code's effective behaviour (see module docstring)
    reset_queue_each_epoch: bool = True  # trainers.py empties the queue (pre_z1 = None) at each epoch start

    def __post_init__(self) -> None:
        if not 0 <= self.dup_rate < 1:
            raise ConfigError(f"esimcse dup_rate must be in [0, 1), got {self.dup_rate}")
        if self.dup_type not in DUP_TYPES:
            raise ConfigError(f"esimcse dup_type must be one of {', '.join(DUP_TYPES)}, got {self.dup_type!r}")
        if self.max_dup < 1:
            raise ConfigError(f"esimcse max_dup must be >= 1, got {self.max_dup}")
        if self.queue_size < 0:
            raise ConfigError(f"esimcse queue_size must be >= 0 (0 = no queue), got {self.queue_size}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"esimcse momentum must be in [0, 1), got {self.momentum}")
        if self.momentum_init not in MOMENTUM_INITS:
            raise ConfigError(f"esimcse momentum_init must be one of {', '.join(MOMENTUM_INITS)}, got {self.momentum_init!r}")


def repeat_tokens(ids: Sequence[int], dup_rate: float, max_dup: int, rng: np.random.Generator) -> list[int]:
    """Duplicate a few tokens in place (``dup_type=bpe``); never the first or last token ([CLS], [SEP]).

    With L = len(ids) and cap = min(max_dup, ⌊dup_rate·L⌋): when cap > 0, draw n uniformly from
    {0, …, cap−1} and n distinct positions from {1, …, L−2}; each chosen token appears twice.
    """
    length = len(ids)
    cap = min(max_dup, int(dup_rate * length))
    if cap <= 0:
        return list(ids)
    n = min(int(rng.integers(cap)), max(0, length - 2))
    chosen = set(rng.choice(np.arange(1, length - 1), size=n, replace=False).tolist()) if n else set()
    out: list[int] = []
    for i, token in enumerate(ids):
        if i in chosen:
            out.append(token)
        out.append(token)
    return out


def repeat_words(sentence: str, dup_rate: float, max_dup: int, rng: np.random.Generator) -> str:
    """Duplicate a few whitespace words (``dup_type=word``); n ~ U{0, …, min(max_dup, L, max(2, ⌊rate·L⌋))−1}, positions < L−1."""
    words = sentence.split(" ")
    length = len(words)
    n = int(rng.integers(min(max_dup, length, max(2, int(dup_rate * length)))))
    chosen = set(rng.choice(np.arange(0, length - 1), size=n, replace=False).tolist()) if n else set()
    return " ".join(f"{w} {w}" if i in chosen else w for i, w in enumerate(words))


@register_method
class ESimCSE(Method):
    """Word-repetition positives and momentum-encoder queue negatives.

    Inputs: raw sentences; view 1 = the sentence, view 2 = its word-repeated copy (dropout on both).
    Returns: ``parts = {"cl": InfoNCE over in-batch + queued negatives}``.
    State: the momentum encoder and the queue live outside ``state_dict()`` and are carried by
    :meth:`extra_state` (resume); neither is part of the evaluated model.
    References: Wu et al., "ESimCSE: Enhanced Sample Building Method for Contrastive Learning of
    Unsupervised Sentence Embedding", COLING 2022. Relations: SimCSE + augmentation + MoCo queue.
    """

    name = "esimcse"
    args_class = ESimCSEArgs
    recipe = Recipe(batch_size=64, learning_rate=3e-5, epochs=1)  # ESimCSE/run.sh, bert-base-uncased
    args: ESimCSEArgs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._momentum: Hidden | None = None
        # Non-persistent: carried by extra_state (not state_dict), moved by .to() like any buffer.
        self.register_buffer("queue", torch.zeros(0, self.encoder.hidden_size), persistent=False)
        if self.for_training and self.args.queue_size > 0:
            momentum = copy.deepcopy(self.encoder.backbone)
            if self.args.momentum_init == "random":
                init_bert_style(momentum, float(getattr(momentum.config, "initializer_range", 0.02)))
            momentum.eval()
            for p in momentum.parameters():
                p.requires_grad_(False)
            self._momentum = Hidden(momentum)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> ESimCSE:
        super()._apply(fn, recurse)
        if self._momentum is not None:
            self._momentum.apply(fn)
        return self

    @property
    def momentum_encoder(self) -> torch.nn.Module | None:
        """The EMA copy of the backbone (None when not training or ``queue_size=0``)."""
        return self._momentum.module if self._momentum is not None else None

    # -- data -----------------------------------------------------------------------------------
    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        tok, a = self.encoder.tokenizer, self.args
        originals = tok(list(sentences), truncation=True, max_length=self.max_len)["input_ids"]
        if a.dup_type == "word":
            texts = [repeat_words(s, a.dup_rate, a.max_dup, rng) for s in sentences]
            repeated = tok(texts, truncation=True, max_length=self.max_len)["input_ids"]
        else:  # the repeated copy may exceed max_len, as in the official preprocessing
            repeated = [repeat_tokens(ids, a.dup_rate, a.max_dup, rng) for ids in originals]
        # Rows 0..N-1: originals; N..2N-1: repeated copies; padded to one width for a single pass.
        return {"tokens": pad_ids(list(originals) + repeated, tok)}

    # -- training -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> MethodOutput:
        tokens = batch["tokens"]
        n = tokens["input_ids"].shape[0] // 2
        pre, post = self.encoder(tokens)
        z1, z2 = post[:n], post[n:]
        if self.training and self.momentum_encoder is not None:
            self._momentum_update()
        loss = info_nce_with_negatives(z1, z2, self.queue, self.temperature)
        if self.training and self.momentum_encoder is not None:
            self._enqueue({k: v[:n] for k, v in tokens.items()})
        return MethodOutput(loss=loss, parts={"cl": loss}, views={"z1_post_mlp": z1, "z1_pre_mlp": pre[:n], "z2_post_mlp": z2})

    @torch.no_grad()
    def _momentum_update(self) -> None:
        """θ_m ← m·θ_m + (1−m)·θ with the online weights of this step (before the optimiser updates them)."""
        m = self.args.momentum
        target = list(self.momentum_encoder.parameters())
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, [p.detach() for p in self.encoder.backbone.parameters()], alpha=1.0 - m)

    @torch.no_grad()
    def _enqueue(self, originals: dict[str, torch.Tensor]) -> None:
        """Encode the original sentences with the momentum encoder (eval mode) and the online head; push them."""
        hidden = self.momentum_encoder(**originals).last_hidden_state
        pooled = self.encoder.pool_tokens(hidden, originals["attention_mask"], self.encoder.pooler)
        keys = (self.encoder.head(pooled) if self.encoder.head is not None else pooled).to(self.queue.dtype)
        if self.queue.shape[0] == 0:
            self.queue = keys.clone()  # the official first push keeps the whole batch, even beyond queue_size
        else:
            self.queue = torch.cat([self.queue, keys], dim=0)[-self.args.queue_size :]

    def on_epoch_start(self, epoch: int) -> None:
        if self.args.reset_queue_each_epoch:
            self.queue = self.queue.new_zeros(0, self.queue.shape[1])

    def extra_state(self) -> dict[str, Any]:
        if self.momentum_encoder is None:
            return {}
        return {
            "queue": self.queue.detach().cpu().clone(),
            "momentum_encoder": {k: v.detach().cpu().clone() for k, v in self.momentum_encoder.state_dict().items()},
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.momentum_encoder is None:
            return
        if "momentum_encoder" not in state:
            raise ConfigError("this resume checkpoint has no ESimCSE momentum encoder; resume with the same method or --overwrite")
        self.momentum_encoder.load_state_dict(state["momentum_encoder"])
        self.queue = state["queue"].to(device=self.queue.device, dtype=self.queue.dtype)
