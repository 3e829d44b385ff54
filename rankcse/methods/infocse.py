"""InfoCSE (Wu, Gao, Lin, Han, Wang & Hu, Findings of EMNLP 2022): contrastive loss + information aggregation.

L = InfoNCE (SimCSE's dropout views) + β·L_MLM. The auxiliary MLM reconstructs masked tokens
through a network that sees the sentence only through the main encoder's [CLS]:

1. both views are masked (BERT 80/10/10, probability 0.4; special tokens never);
2. a frozen copy of the lower ``skip_from`` layers of the initial checkpoint encodes the masked
   sentence (eval mode, no gradient); its states at positions ≥ 1 are kept;
3. position 0 is replaced by the main encoder's last-layer [CLS] of the unmasked view (with gradient);
4. ``n_head_layers`` trainable transformer layers and an LM head predict the masked tokens.

The projection head is BatchNorm-based (Linear 2d no bias → BN → ReLU → Linear d no bias → BN
without affine), training-only like SimCSE's MLP. The auxiliary network exists only in a training
instance: it is neither part of the evaluated encoder nor of the best checkpoint.

Source: caskcsg/sentemb @5eeec55, ``InfoCSE/``: ``infocse/models_cls_mlm.py`` (``ProjectionMLP``,
``BertForCL.__init__`` builds ``mlm``/``c_head``/``lm_head``, ``cl_forward`` "condenser related" block,
``loss += mlm_weight * mlm_loss``), ``train_cls_mlm.py`` (weights: the frozen MLM network and LM head
from the initial checkpoint's MLM model, ``c_head`` random unless a local ``model.pt`` exists;
``mask_tokens``) and ``Infocse-bert-base.sh`` (recipe).

Deviations / adaptations (settings, documented):
- ``skip_from`` defaults to half the encoder's depth (``skip_from_fraction=0.5``): 6 of 12 layers on
  BERT-base, the official value, and 3 of 6 on the offline default MiniLM, where an absolute 6 would
  freeze the whole network.
- ``lm_head_init="auto"`` uses the checkpoint's pretrained MLM head when it has one (BERT/RoBERTa
  layouts), as the official code does; checkpoints without one (the packaged MiniLM) get a BERT-style
  head whose decoder starts from the word embeddings and whose transform is randomly initialised.
- The official recipe starts from ``Luyu/condenser`` (pass ``--model Luyu/condenser`` where the hub is
  reachable); the offline default starts from the packaged model.
- The MLM loss of a batch in which nothing was masked is 0 (the official code would give NaN).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rankcse.errors import ConfigError
from rankcse.hf_compat import activation, bidirectional_mask, quiet_transformers
from rankcse.losses import cosine_matrix, info_nce, masked_token_loss
from rankcse.methods.base import Batch, Method, MethodArgs, MethodOutput, Recipe, register_method
from rankcse.methods.common import Hidden, backbone_layers, init_bert_style, split_views, two_views

log = logging.getLogger(__name__)
LM_HEAD_INITS = ("auto", "pretrained", "embeddings")
IGNORE = -100


@dataclass
class InfoCSEArgs(MethodArgs):
    """InfoCSE settings; defaults are ``InfoCSE/Infocse-bert-base.sh``."""

    mlm_weight: float = 1e-5  # Infocse-bert-base.sh mlm_weight
    mlm_probability: float = 0.4  # Infocse-bert-base.sh mlm_rate
    n_head_layers: int = 2  # Infocse-bert-base.sh --n_head_layers
    skip_from: int | None = None  # frozen lower layers; official 6 (of 12); None: skip_from_fraction of the depth
    skip_from_fraction: float = 0.5  # 6/12, the official ratio (adaptation for encoders of other depths)
    batchnorm: bool = True  # Infocse-bert-base.sh --batchnorm: ProjectionMLP instead of SimCSE's MLP
    lm_head_init: str = "auto"  # auto: pretrained MLM head if the checkpoint has one (train_cls_mlm.py), else "embeddings"

    def __post_init__(self) -> None:
        if self.mlm_weight < 0:
            raise ConfigError(f"infocse mlm_weight must be >= 0, got {self.mlm_weight}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"infocse mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.n_head_layers < 1:
            raise ConfigError(f"infocse n_head_layers must be >= 1, got {self.n_head_layers}")
        if self.skip_from is not None and self.skip_from < 1:
            raise ConfigError(f"infocse skip_from must be >= 1 layer, got {self.skip_from}")
        if not 0 < self.skip_from_fraction <= 1:
            raise ConfigError(f"infocse skip_from_fraction must be in (0, 1], got {self.skip_from_fraction}")
        if self.lm_head_init not in LM_HEAD_INITS:
            raise ConfigError(f"infocse lm_head_init must be one of {', '.join(LM_HEAD_INITS)}, got {self.lm_head_init!r}")


class BatchNormProjection(nn.Module):
    """InfoCSE's ``ProjectionMLP``: Linear(d, 2d) → BN → ReLU → Linear(2d, d) → BN(affine=False), no biases."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 2 * dim, bias=False),
            nn.BatchNorm1d(2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, dim, bias=False),
            nn.BatchNorm1d(dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LMHead(nn.Module):
    """BERT's LM prediction head: dense → activation → LayerNorm → decoder to the vocabulary (with bias)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden, act = int(config.hidden_size), getattr(config, "hidden_act", "gelu")
        self.dense = nn.Linear(hidden, hidden)
        self.activation = activation(act) if isinstance(act, str) else act
        self.layer_norm = nn.LayerNorm(hidden, eps=float(getattr(config, "layer_norm_eps", 1e-12)))
        self.decoder = nn.Linear(hidden, int(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(x))))


def _pretrained_lm_parts(name_or_path: str) -> dict[str, torch.Tensor] | None:
    """The checkpoint's MLM head as :class:`LMHead` weights, or None when it has none (or an unknown layout)."""
    from transformers import AutoModelForMaskedLM

    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True)
    except (OSError, ValueError) as exc:
        log.warning("infocse: no masked-LM model could be built from %s (%s)", name_or_path, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    if [k for k in info.get("missing_keys", ()) if "position_ids" not in k]:
        return None
    if hasattr(model, "cls") and hasattr(model.cls, "predictions"):  # BERT family
        transform = model.cls.predictions.transform
        dense, norm = transform.dense, transform.LayerNorm
    elif hasattr(model, "lm_head") and hasattr(model.lm_head, "layer_norm"):  # RoBERTa family
        dense, norm = model.lm_head.dense, model.lm_head.layer_norm
    else:
        return None
    decoder = model.get_output_embeddings()
    bias = decoder.bias if decoder.bias is not None else torch.zeros(decoder.weight.shape[0])
    parts = {
        "dense.weight": dense.weight,
        "dense.bias": dense.bias,
        "layer_norm.weight": norm.weight,
        "layer_norm.bias": norm.bias,
        "decoder.weight": decoder.weight,
        "decoder.bias": bias,
    }
    return {k: v.detach().clone() for k, v in parts.items()}


@register_method
class InfoCSE(Method):
    """SimCSE plus a [CLS]-conditioned masked-token reconstruction objective.

    Inputs: raw sentences; views are dropout copies; both are also masked for the auxiliary MLM.
    Returns: ``parts = {"cl": InfoNCE, "mlm": masked-token cross-entropy}``; ``loss = cl + mlm_weight·mlm``.
    References: Wu et al., "InfoCSE: Information-aggregated Contrastive Learning of Sentence
    Embeddings", Findings of EMNLP 2022. Relations: SimCSE + Condenser-style auxiliary head.
    """

    name = "infocse"
    args_class = InfoCSEArgs
    recipe = Recipe(batch_size=64, learning_rate=7e-6, epochs=2)  # Infocse-bert-base.sh
    args: InfoCSEArgs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoder, a = self.encoder, self.args
        config = encoder.backbone.config
        std = float(getattr(config, "initializer_range", 0.02))
        if a.batchnorm and encoder.head is not None:
            encoder.head = BatchNormProjection(encoder.hidden_size)
            init_bert_style(encoder.head, std)  # cl_init's init_weights: Linear ~ N(0, initializer_range)
        self._frozen: Hidden | None = None
        self.c_head: nn.ModuleList | None = None
        self.lm_head: LMHead | None = None
        if not self.for_training:
            return
        layers = backbone_layers(encoder.backbone, self.name)
        self.skip_from = a.skip_from if a.skip_from is not None else max(1, round(a.skip_from_fraction * len(layers)))
        if self.skip_from > len(layers):
            raise ConfigError(f"infocse skip_from={self.skip_from} exceeds the {len(layers)} layers of the model")
        frozen = copy.deepcopy(encoder.backbone)
        frozen.encoder.layer = nn.ModuleList(list(frozen.encoder.layer)[: self.skip_from])
        frozen.config.num_hidden_layers = self.skip_from
        frozen.eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        self._frozen = Hidden(frozen)
        self.c_head = nn.ModuleList(copy.deepcopy(layers[0]) for _ in range(a.n_head_layers))
        init_bert_style(self.c_head, std)  # official: c_head.apply(_init_weights), i.e. random
        self.lm_head = LMHead(config)
        self.lm_head_source = self._init_lm_head(std)
        vocab = int(config.vocab_size)
        self._random_vocab = min(len(encoder.tokenizer), vocab)
        self._special_ids = np.array(sorted(set(encoder.tokenizer.all_special_ids)), dtype=np.int64)
        if encoder.tokenizer.mask_token_id is None:
            raise ConfigError("infocse needs a tokenizer with a mask token ([MASK]); use a BERT-like model")

    def _init_lm_head(self, std: float) -> str:
        """Load the pretrained MLM head or start from the word embeddings; returns which one was used."""
        mode = self.args.lm_head_init
        if mode in ("auto", "pretrained"):
            parts = _pretrained_lm_parts(self.encoder.backbone.name_or_path)
            if parts is not None:
                self.lm_head.load_state_dict(parts)
                return "pretrained"
            if mode == "pretrained":
                raise ConfigError(
                    f"infocse lm_head_init=pretrained, but {self.encoder.backbone.name_or_path} "
                    "has no pretrained MLM head; use lm_head_init=auto or embeddings"
                )
            log.info("infocse: the model has no pretrained MLM head; the LM head starts from the word embeddings")
        init_bert_style(self.lm_head, std)
        with torch.no_grad():
            self.lm_head.decoder.weight.copy_(self.encoder.backbone.get_input_embeddings().weight)
        return "embeddings"

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> InfoCSE:
        super()._apply(fn, recurse)
        if self._frozen is not None:
            self._frozen.apply(fn)
        return self

    @property
    def frozen_encoder(self) -> nn.Module | None:
        """The frozen lower layers of the initial checkpoint (training instances only)."""
        return self._frozen.module if self._frozen is not None else None

    def auxiliary_modules(self) -> dict[str, nn.Module]:
        """The training-only auxiliary network (for inspection and memory accounting)."""
        if self._frozen is None:
            return {}
        return {"frozen_lower_layers": self._frozen.module, "c_head": self.c_head, "lm_head": self.lm_head}

    # -- data -----------------------------------------------------------------------------------
    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        tokens = self.encoder.tokenize(sentences, self.max_len)
        batch: Batch = {"tokens": tokens}
        if self.for_training:
            ids = torch.cat([tokens["input_ids"], tokens["input_ids"]], dim=0).numpy()  # both views, masked independently
            mlm_ids, labels = self.mask_tokens(ids, rng)
            batch["mlm_input_ids"], batch["mlm_labels"] = torch.from_numpy(mlm_ids), torch.from_numpy(labels)
        return batch

    def mask_tokens(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """BERT masking: each non-special token with probability p; of those 80% [MASK], 10% random, 10% kept."""
        p = self.args.mlm_probability
        special = np.isin(ids, self._special_ids)
        masked = (rng.random(ids.shape) < p) & ~special
        labels = np.where(masked, ids, IGNORE)
        replaced = (rng.random(ids.shape) < 0.8) & masked
        randomised = (rng.random(ids.shape) < 0.5) & masked & ~replaced
        random_ids = rng.integers(0, self._random_vocab, size=ids.shape)
        out = ids.copy()
        out[replaced] = self.encoder.tokenizer.mask_token_id
        out[randomised] = random_ids[randomised]
        return out, labels

    # -- training -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> MethodOutput:
        tokens = batch["tokens"]
        n = tokens["input_ids"].shape[0]
        doubled = two_views(tokens)
        hidden = self.encoder.hidden_states(doubled)  # (2N, L, d)
        pre = self.encoder.pool_tokens(hidden, doubled["attention_mask"], self.encoder.pooler)
        post = self.encoder.head(pre) if self.encoder.head is not None else pre
        z1, z2, views = split_views(pre, post, n)
        cl = info_nce(cosine_matrix(z1, z2) / self.temperature)
        if self._frozen is None or "mlm_input_ids" not in batch:
            return MethodOutput(loss=cl, parts={"cl": cl}, views=views)
        mlm = self.mlm_loss(hidden[:, :1], batch["mlm_input_ids"], batch["mlm_labels"], doubled)
        loss = cl + self.args.mlm_weight * mlm
        return MethodOutput(loss=loss, parts={"cl": cl, "mlm": mlm}, views=views)

    def mlm_loss(
        self, cls_states: torch.Tensor, mlm_input_ids: torch.Tensor, labels: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Reconstruct the masked tokens from the frozen lower-layer states with position 0 replaced by ``cls_states`` (2N, 1, d)."""
        extra = {k: v for k, v in tokens.items() if k == "token_type_ids"}
        with torch.no_grad():
            lower = self.frozen_encoder(input_ids=mlm_input_ids, attention_mask=tokens["attention_mask"], **extra).last_hidden_state
        states = torch.cat([cls_states, lower[:, 1:].to(cls_states.dtype)], dim=1)
        mask = bidirectional_mask(self.encoder.backbone.config, states, tokens["attention_mask"])
        for layer in self.c_head:
            out = layer(states, mask)
            states = out[0] if isinstance(out, tuple) else out
        selected = labels != IGNORE
        return masked_token_loss(self.lm_head(states[selected]), labels[selected])
