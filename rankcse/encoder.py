"""Hugging Face backbone + tokenizer + pooling, shared by every method.

Poolers (SimCSE's names): ``cls`` is the last-layer [CLS] state followed by the MLP head
(Linear + tanh); ``cls_before_pooler`` is the same [CLS] state without the head; ``mean`` is the
attention-masked average of the last layer. With ``mlp_only_train`` (the default, as in SimCSE's
unsupervised recipe) the head is used while training only, so ``cls`` evaluates as ``cls_before_pooler``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from rankcse.errors import ModelLoadError
from rankcse.paths import resolve_model

POOLERS = ("cls", "cls_before_pooler", "mean")
log = logging.getLogger(__name__)


class MLPHead(nn.Module):
    """SimCSE's training-time projection: Linear(d, d) followed by tanh."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


def _looks_like_path(name: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else that does not exist is a missing path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or os.sep != "/" and os.sep in name


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the "some weights were not used" chatter of ``from_pretrained`` (e.g. BERT's unused pooler)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def unreadable_weights(path: Path, exc: BaseException) -> ModelLoadError:
    """The one-line error for a weights file that exists but does not read back: name the file and the likely cause."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
    return ModelLoadError(
        f"weights file {path} cannot be read ({first}); it is probably truncated (an interrupted copy or a full disk): "
        "copy or export the checkpoint again"
    )


def load_backbone(name_or_path: str | None) -> tuple[nn.Module, object, str]:
    """Load ``(model, tokenizer, resolved)`` for a Hugging Face name or local folder; ``None``/``default`` = packaged MiniLM."""
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_model(name_or_path)
    path = Path(resolved).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json; pass a Hugging Face model folder or name")
        resolved = str(path.resolve())
    elif _looks_like_path(resolved):
        raise ModelLoadError(f"model path {resolved} does not exist; pass an existing folder or a Hugging Face model name")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(resolved)
            try:
                model = AutoModel.from_pretrained(resolved, add_pooling_layer=False)
            except TypeError:  # architectures without a pooler do not take the argument
                model = AutoModel.from_pretrained(resolved)
    except SafetensorError as exc:
        weights = path / "model.safetensors"
        raise unreadable_weights(weights if weights.is_file() else Path(resolved), exc) from None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {resolved!r} ({first}); pass a local folder, or a hub name on a machine that reaches the hub"
        ) from exc
    return model, tokenizer, resolved


def max_positions(model: nn.Module, tokenizer: object) -> int:
    """Longest input the model accepts (tokenizers often report a huge placeholder)."""
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(limit, tok_limit))


class Encoder(nn.Module):
    """A backbone with its tokenizer, a pooler and an optional MLP head.

    Args:
        backbone: a Hugging Face ``AutoModel``.
        tokenizer: its tokenizer.
        pooler: one of :data:`POOLERS`.
        mlp_only_train: use the head (``cls`` only) while training and not at evaluation.
    """

    def __init__(self, backbone: nn.Module, tokenizer: object, pooler: str = "cls", mlp_only_train: bool = True) -> None:
        super().__init__()
        if pooler not in POOLERS:
            raise ValueError(f"unknown pooler {pooler!r}: use one of {', '.join(POOLERS)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooler = pooler
        self.mlp_only_train = mlp_only_train
        self.hidden_size = int(backbone.config.hidden_size)
        self.head: nn.Module | None = MLPHead(self.hidden_size) if pooler == "cls" else None
        self.eval_max_length = max_positions(backbone, tokenizer)
        self.autocast_dtype: torch.dtype | None = None

    @property
    def eval_pooler(self) -> str:
        """The pooler evaluation sees: ``cls`` with ``mlp_only_train`` evaluates without the head."""
        if self.pooler == "cls" and self.mlp_only_train:
            return "cls_before_pooler"
        return self.pooler

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the configured AMP dtype (a no-op when AMP is off)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def tokenize(self, sentences: Sequence[str], max_length: int | None) -> dict[str, torch.Tensor]:
        """Tokenize with padding to the longest sentence and truncation to ``max_length`` (model limit if None)."""
        enc = self.tokenizer(
            list(sentences),
            padding=True,
            truncation=True,
            max_length=max_length or self.eval_max_length,
            return_tensors="pt",
        )
        return dict(enc)

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last-layer token states (N, L, d)."""
        return self.backbone(**batch).last_hidden_state

    @staticmethod
    def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooler: str) -> torch.Tensor:
        """Pool token states (N, L, d) into sentence vectors (N, d)."""
        if pooler == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return hidden[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training representation: ``(pre_mlp, post_mlp)`` sentence vectors (identical without a head)."""
        pre = self.pool_tokens(self.hidden_states(batch), batch["attention_mask"], self.pooler)
        post = self.head(pre) if self.head is not None else pre
        return pre, post

    def represent(self, batch: dict[str, torch.Tensor], pooler: str | None = None) -> torch.Tensor:
        """Evaluation representation of a tokenized batch for ``pooler`` (default :attr:`eval_pooler`)."""
        pooler = pooler or self.eval_pooler
        pooled = self.pool_tokens(self.hidden_states(batch), batch["attention_mask"], pooler)
        if pooler == "cls":
            if self.head is None:
                raise ValueError("pooler 'cls' needs the MLP head, which this model does not have; use cls_before_pooler")
            pooled = self.head(pooled)
        return pooled

    def length_sorted_batches(
        self, sentences: Sequence[str], batch_size: int, max_length: int | None = None
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Tokenize once, then yield ``(indices, padded batch)`` in order of length to keep padding small."""
        ids = self.tokenizer(list(sentences), truncation=True, max_length=max_length or self.eval_max_length)["input_ids"]
        pad_id = self.tokenizer.pad_token_id or 0
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                attention_mask[row, : len(ids[i])] = 1
            yield idx, {"input_ids": input_ids, "attention_mask": attention_mask}

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str], batch_size: int = 128, pooler: str | None = None) -> torch.Tensor:
        """Evaluation embeddings (N, d), float32 on CPU, in the order of ``sentences``; runs in eval mode."""
        was_training = self.training
        self.eval()
        out = torch.empty(len(sentences), self.hidden_size, dtype=torch.float32)
        try:
            for idx, batch in self.length_sorted_batches(sentences, batch_size):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self.autocast():
                    vec = self.represent(batch, pooler)
                out[idx] = vec.float().cpu()
        finally:
            self.train(was_training)
        return out
