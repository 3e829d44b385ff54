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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from rankcse.batching import by_length, pad_ids
from rankcse.errors import ModelLoadError
from rankcse.hf_compat import quiet_transformers
from rankcse.names import POOLERS
from rankcse.paths import resolve_model

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
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


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
        for idx in by_length(ids, batch_size):
            yield idx, pad_ids([ids[i] for i in idx], self.tokenizer)

    def embed_batches(
        self,
        batches: Iterable[tuple[list[int], dict[str, torch.Tensor]]],
        count: int,
        represent: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings (count, d), float32 on CPU: ``represent`` of each ``(indices, batch)`` (moved to the device, under
        autocast) written at its indices; the caller picks eval mode (:func:`eval_mode`)."""
        out = torch.empty(count, self.hidden_size, dtype=torch.float32)
        for idx, batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self.autocast():
                vec = represent(batch)
            out[idx] = vec.float().cpu()
        return out

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str], batch_size: int = 128, pooler: str | None = None) -> torch.Tensor:
        """Evaluation embeddings (N, d), float32 on CPU, in the order of ``sentences``; runs in eval mode."""
        with eval_mode(self):
            return self.embed_batches(
                self.length_sorted_batches(sentences, batch_size), len(sentences), lambda b: self.represent(b, pooler)
            )
