"""Unsupervised SimCSE (Gao, Yao & Chen, EMNLP 2021).

Each sentence is encoded twice with different dropout masks; the second encoding is the
positive of the first and the other sentences' second encodings are its negatives:
InfoNCE over the N×N matrix of cos(z_i, z_j⁺)/τ.

Source: princeton-nlp/SimCSE ``simcse/models.py::cl_forward`` and ``run_unsup_example.sh``
(batch 64, lr 3e-5, τ 0.05, one epoch, max length 32, [CLS] + MLP while training only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rankcse.losses import cosine_matrix, info_nce
from rankcse.methods.base import Batch, Method, MethodArgs, MethodOutput, Recipe, register_method
from rankcse.methods.common import split_views, two_views


@dataclass
class SimCSEArgs(MethodArgs):
    """SimCSE has no settings beyond the shared ones (temperature, pooler, max length)."""


@register_method
class SimCSE(Method):
    """Dropout-augmented InfoNCE with in-batch negatives.

    Inputs: raw sentences; both views are the same token ids (the augmentation is dropout).
    Returns: ``parts = {"cl": InfoNCE}``.
    References: Gao et al., "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021.
    """

    name = "simcse"
    args_class = SimCSEArgs
    recipe = Recipe(batch_size=64, learning_rate=3e-5, epochs=1)  # run_unsup_example.sh

    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        return {"tokens": self.encoder.tokenize(sentences, self.max_len)}

    def forward(self, batch: Batch) -> MethodOutput:
        tokens = batch["tokens"]
        n = tokens["input_ids"].shape[0]
        pre, post = self.encoder(two_views(tokens))  # one pass over both views: (2N, L)
        z1, z2, views = split_views(pre, post, n)
        logits = cosine_matrix(z1, z2) / self.temperature  # (N, N)
        loss = info_nce(logits)
        return MethodOutput(loss=loss, parts={"cl": loss}, views=views)
