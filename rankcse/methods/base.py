"""The contract every contrastive method implements, and the registry that finds methods by name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rankcse.encoder import Encoder
from rankcse.errors import ConfigError

Batch = dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A method's official BERT-base training recipe (used where the run config leaves a value unset)."""

    batch_size: int = 64
    learning_rate: float = 3e-5
    epochs: int = 1


@dataclass
class MethodOutput:
    """What :meth:`Method.forward` returns.

    ``loss`` is the method's own objective (before RR); ``parts`` names its components for logging
    (``cl``, ``mlm``, …); ``views`` holds the batch representations RR may look at:
    ``z1_post_mlp``, ``z1_pre_mlp`` and ``z2_post_mlp``.
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    views: dict[str, torch.Tensor]


@dataclass
class MethodArgs:
    """Base of the per-method hyperparameter dataclasses."""


class Method(nn.Module):
    """A contrastive fine-tuning method over an :class:`Encoder`.

    Subclasses set ``name``, ``args_class`` and ``recipe`` and implement :meth:`collate` and
    :meth:`forward`. The default :meth:`embed` is the encoder's evaluation representation.
    """

    name: ClassVar[str]
    args_class: ClassVar[type[MethodArgs]] = MethodArgs
    recipe: ClassVar[Recipe] = Recipe()
    #: Poolers this method can train with (``None`` = any of the encoder's).
    poolers: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, encoder: Encoder, args: MethodArgs, temperature: float, max_len: int, training: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.args = args
        self.temperature = temperature
        self.max_len = max_len
        self.for_training = training

    # -- data -----------------------------------------------------------------------------------
    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        """Turn raw sentences into a CPU batch (tokenization, augmentation); ``rng`` is per batch."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> MethodOutput:
        raise NotImplementedError

    def after_optimizer_step(self, batch: Batch, output: MethodOutput) -> None:
        """Hook after each optimiser step (e.g. momentum-encoder update, queue push)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before the first batch of each epoch (also when a resumed run starts an epoch), e.g. to empty a queue."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (frozen auxiliary parts excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def extra_state(self) -> dict[str, Any]:
        """Training-only state to carry through a resume checkpoint (queues, momentum encoders)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    # -- evaluation -----------------------------------------------------------------------------
    def eval_modules(self) -> dict[str, nn.Module]:
        """Modules beyond the backbone that a saved checkpoint needs (the head, templates, …)."""
        return {"head": self.encoder.head} if self.encoder.head is not None else {}

    @property
    def eval_representation(self) -> str:
        """Name of the representation evaluation uses (stored with checkpoints)."""
        return self.encoder.eval_pooler

    def representation_spec(self) -> dict[str, Any]:
        """JSON description of the evaluation representation, stored with checkpoints and checked when one is loaded."""
        return {"pooler": self.encoder.eval_pooler}

    def embed(self, sentences: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Evaluation embeddings (N, d) on CPU, in eval mode."""
        return self.encoder.embed(sentences, batch_size)


# -- registry ----------------------------------------------------------------------------------
METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """Look a method up by name; unknown names raise a :class:`ConfigError` listing the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown method {name!r}{hint}: use one of {', '.join(sorted(METHODS))}") from None


def build_args(method: type[Method], values: dict[str, Any]) -> MethodArgs:
    """Build a method's hyperparameter dataclass from a dict, rejecting unknown keys."""
    known = {f.name for f in fields(method.args_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"method {method.name!r} has no setting {unknown[0]!r}: its settings are {valid}")
    return method.args_class(**values)


__all__ = ["Batch", "METHODS", "Method", "MethodArgs", "MethodOutput", "Recipe", "build_args", "get_method", "register_method"]
