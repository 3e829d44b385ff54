"""MixCSE (Zhang, Zhang, Mensah, Liu & Mao, AAAI 2022): mixed hard negatives with stop-gradient.

SimCSE's dropout views, plus synthetic hard negatives that mix a positive with the next
sentence's representation, ``m_j = sg(λ·v_j + (1−λ)·v_{j+1})`` (and the same over view 1),
added to the InfoNCE denominator (see :func:`rankcse.losses.mixcse_logits` for the exact
N×3N logit matrix). The stop-gradient keeps the mixes as fixed, informative negatives.

Source: BDBC-KG-NLP/MixCSE_AAAI2022 @884145e, ``mixcse/models_mix.py::cl_forward`` ("contruct hard
samples": two mixed blocks, each with the one entry that is mostly the anchor's own positive masked)
and ``run_unsup_example.sh`` (batch 64, lr 3e-5, τ 0.05, ``--lambdas 0.2``, one epoch). The
hard-negative weight of that script is 0, so its extra weight matrices are no-ops and are omitted.

Quirk kept by default (``masked_logit="zero"``): the official code multiplies the masked entries by
0, so they become logit 0 and still add e⁰ = 1 to each denominator; ``"exclude"`` drops them (−∞).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rankcse.errors import ConfigError
from rankcse.losses import MIX_MASKED_LOGITS, info_nce, mixcse_logits
from rankcse.methods.base import Batch, Method, MethodArgs, MethodOutput, Recipe, register_method
from rankcse.methods.common import split_views, two_views


@dataclass
class MixCSEArgs(MethodArgs):
    """MixCSE settings; defaults are ``run_unsup_example.sh`` (bert-base-uncased)."""

    mix_lambda: float = 0.2  # run_unsup_example.sh --lambdas 0.2: weight of the anchor's own positive in its mix
    masked_logit: str = "zero"  # models_mix.py: mask * logit, i.e. 0 (official); "exclude": -inf

    def __post_init__(self) -> None:
        if not 0 <= self.mix_lambda <= 1:
            raise ConfigError(f"mixcse mix_lambda must be in [0, 1], got {self.mix_lambda}")
        if self.masked_logit not in MIX_MASKED_LOGITS:
            raise ConfigError(f"mixcse masked_logit must be one of {', '.join(MIX_MASKED_LOGITS)}, got {self.masked_logit!r}")


@register_method
class MixCSE(Method):
    """Dropout-augmented InfoNCE with stop-gradient mixed hard negatives.

    Inputs: raw sentences; both views are the same token ids (the augmentation is dropout).
    Returns: ``parts = {"cl": InfoNCE over the N×3N logits}``.
    References: Zhang et al., "Unsupervised Sentence Representation via Contrastive Learning with
    Mixing Negatives", AAAI 2022. Relations: SimCSE + mixed negatives.
    """

    name = "mixcse"
    args_class = MixCSEArgs
    recipe = Recipe(batch_size=64, learning_rate=3e-5, epochs=1)  # run_unsup_example.sh
    args: MixCSEArgs

    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        return {"tokens": self.encoder.tokenize(sentences, self.max_len)}

    def forward(self, batch: Batch) -> MethodOutput:
        tokens = batch["tokens"]
        n = tokens["input_ids"].shape[0]
        pre, post = self.encoder(two_views(tokens))
        z1, z2, views = split_views(pre, post, n)
        logits = mixcse_logits(z1, z2, self.args.mix_lambda, self.temperature, self.args.masked_logit)
        loss = info_nce(logits)
        return MethodOutput(loss=loss, parts={"cl": loss}, views=views)
