"""Build a method from a run config (for training) or from a model folder or name (for evaluation)."""

from __future__ import annotations

from pathlib import Path

import torch

from rankcse.checkpoint import load_eval_modules, read_meta
from rankcse.config import TrainConfig
from rankcse.encoder import Encoder, load_backbone
from rankcse.errors import ConfigError, ModelLoadError
from rankcse.methods import Method, build_args, get_method
from rankcse.names import POOLERS


def build_method(cfg: TrainConfig, training: bool = True, model: str | None = None) -> Method:
    """Instantiate ``cfg.method`` on ``model`` (default ``cfg.model``); new heads are initialised from ``cfg.seed``."""
    method_cls = get_method(cfg.method)
    args = build_args(method_cls, cfg.method_args)
    backbone, tokenizer, _ = load_backbone(model or cfg.model)
    torch.manual_seed(cfg.seed)  # the head's initialisation is part of what the seed fixes
    encoder = Encoder(backbone, tokenizer, cfg.pooler, cfg.mlp_only_train)
    return method_cls(encoder, args, temperature=cfg.temperature, max_len=cfg.max_len, training=training)


def load_for_eval(model: str | None, pooler: str | None = None) -> Method:
    """A method ready to embed: a rankcse checkpoint (its own representation) or any Hugging Face model.

    For a checkpoint, ``pooler`` may override the stored evaluation pooler; for a plain model it
    defaults to ``cls_before_pooler`` (SimCSE's convention for unsupervised checkpoints).
    """
    if pooler is not None and pooler not in POOLERS:
        raise ConfigError(f"unknown pooler {pooler!r}: use one of {', '.join(POOLERS)}")
    meta = read_meta(Path(model)) if model and Path(model).is_dir() else None
    if meta is None:
        cfg = TrainConfig(model=model or "default", pooler=pooler or "cls_before_pooler").resolved()
        if cfg.pooler == "cls":
            raise ConfigError("pooler 'cls' needs a trained MLP head, which a plain model lacks; use cls_before_pooler or mean")
        method = build_method(cfg, training=False)
    else:
        cfg = TrainConfig.from_dict(meta["train_config"])
        method = build_method(cfg, training=False, model=str(model))
        load_eval_modules(method, Path(model))
        stored = meta.get("representation")
        if stored is not None and stored != method.representation_spec():
            raise ModelLoadError(
                f"checkpoint {model} was evaluated with representation {stored}, but this rankcse rebuilds "
                f"{method.representation_spec()}; evaluate it with the rankcse version that trained it"
            )
        if pooler is not None and method.eval_representation not in POOLERS:
            raise ConfigError(
                f"a {cfg.method} checkpoint evaluates with its own representation ({method.eval_representation}); drop --pooler"
            )
        if pooler is not None:
            if pooler == "cls" and method.encoder.head is None:
                raise ConfigError("this checkpoint has no MLP head; use --pooler cls_before_pooler or mean")
            method.encoder.pooler = pooler
            method.encoder.mlp_only_train = False
    method.eval()
    return method
