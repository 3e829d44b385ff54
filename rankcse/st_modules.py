"""sentence-transformers module for PromptBERT's representation; imported by sentence-transformers from ``modules.json``.

:class:`PromptMask` is the backbone module of an exported PromptBERT model: it wraps each sentence in the
template (after appending "." as rankcse's evaluation does), encodes it, and returns the last-layer state at
[MASK] as the sentence embedding, minus the template-only state δ_T[k] when the run evaluated with denoising.
It mirrors :meth:`rankcse.methods.promptbert.PromptBERT.embed`; the export tests check they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.base.modules.transformer import Transformer

from rankcse.batching import pad_ids
from rankcse.methods.promptbert import add_period

PROMPT_KEYS = ["template_prefix", "template_suffix", "mask_in_prefix", "mask_in_suffix", "add_period", "denoise"]


class PromptMask(Transformer):
    """A ``Transformer`` whose input is the sentence in a prompt template and whose output is the [MASK] state."""

    config_keys: list[str] = [*Transformer.config_keys, *PROMPT_KEYS]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        template_prefix: Sequence[int],
        template_suffix: Sequence[int],
        mask_in_prefix: int | None = None,
        mask_in_suffix: int | None = None,
        add_period: bool = True,
        denoise: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if (mask_in_prefix is None) == (mask_in_suffix is None):
            raise ValueError("PromptMask needs exactly one of mask_in_prefix and mask_in_suffix")
        self.template_prefix = [int(i) for i in template_prefix]
        self.template_suffix = [int(i) for i in template_suffix]
        self.mask_in_prefix = mask_in_prefix
        self.mask_in_suffix = mask_in_suffix
        self.add_period = bool(add_period)
        self.denoise = bool(denoise)

    def _mask_position(self, sentence_length: int) -> int:
        if self.mask_in_prefix is not None:
            return self.mask_in_prefix
        return len(self.template_prefix) + sentence_length + self.mask_in_suffix

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Template-wrapped ids (each sentence cut so the whole fits ``max_seq_length``), [MASK] positions and sentence lengths."""
        if not inputs:
            return {}
        texts = [str(t) for t in inputs]
        if prompt:
            texts = self._prepend_prompt(texts, prompt)
        if self.add_period:
            texts = [add_period(t) for t in texts]
        limit = self.max_seq_length - len(self.template_prefix) - len(self.template_suffix)
        ids = [row[:limit] for row in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        features: dict[str, Any] = pad_ids([[*self.template_prefix, *row, *self.template_suffix] for row in ids], self.tokenizer)
        features["mask_pos"] = torch.tensor([self._mask_position(len(row)) for row in ids], dtype=torch.long)
        features["sent_len"] = torch.tensor([len(row) for row in ids], dtype=torch.long)
        return features

    def template_bias(self, lengths: torch.Tensor) -> torch.Tensor:
        """δ_T[k] for each sentence length: the [MASK] state of the template alone, positions after the slot shifted by k."""
        unique, inverse = torch.unique(lengths, return_inverse=True)
        ids = torch.tensor([*self.template_prefix, *self.template_suffix], dtype=torch.long, device=lengths.device)
        positions = torch.arange(ids.shape[0], device=lengths.device).repeat(unique.shape[0], 1)
        positions[:, len(self.template_prefix) :] += unique.unsqueeze(1)
        mask = self.mask_in_prefix if self.mask_in_prefix is not None else len(self.template_prefix) + self.mask_in_suffix
        hidden = self.model(input_ids=ids.repeat(unique.shape[0], 1), position_ids=positions).last_hidden_state
        return hidden[:, mask][inverse]

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Token states and the (denoised) [MASK] state as ``sentence_embedding``."""
        inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
        hidden = self.model(**inputs, return_dict=True).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        vec = hidden[rows, features["mask_pos"]]
        if self.denoise:
            vec = vec - self.template_bias(features["sent_len"])
        features["token_embeddings"] = hidden
        features["sentence_embedding"] = vec
        return features
