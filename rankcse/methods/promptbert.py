"""PromptBERT, unsupervised (Jiang et al., EMNLP 2022): prompt representations with template denoising.

A sentence x is wrapped in a template, e.g. ``This sentence of "[X]" means [MASK] .``, and represented
by the last-layer state at [MASK]. Template denoising subtracts what the template alone produces:
the template without the sentence, with the position ids after the sentence slot shifted by the
sentence's length k, is encoded and its [MASK] state δ_T[k] removed:

    e(x) = h_[MASK](T(x)) − δ_T[len(x)]

The two views use two different templates (and dropout); the objective is InfoNCE on MLP(e(x)),
the MLP being training-only. δ is recomputed at every step, with gradient.

Source: kongds/Prompt-BERT @690ba6e: ``prompt_bert/models.py::cl_forward`` (``get_delta`` with positions
after the template prefix shifted by k, subtraction by ``blen``, MLP, cross-entropy), ``train.py``
(template parsing; each sentence truncated to ``max_seq_length`` word pieces *before* the template is
added), ``run.sh`` case ``unsup-bert`` (templates, batch 256, lr 1e-5, one epoch) and its evaluation
flags, ``eval_only.sh`` and ``evaluation.py::batcher`` (test-time representation).

Evaluation representation: the official unsup-bert test (``run.sh`` eargs, ``eval_only.sh``) uses
template 1 **without** denoising and appends "." to sentences that do not end in . ? " or ',
while the STS-B dev evaluation during its training (``sentemb_forward``) subtracts δ and adds no
period. One representation serves both here; the default follows the published test protocol
(``eval_denoise=False``, ``eval_add_period=True``); ``eval_denoise=True, eval_add_period=False``
gives the official dev-time representation. The representation is stored with checkpoints.

Other deviations: δ is computed only for the sentence lengths present in a batch (the official code
computes all 50 and indexes; the values used are the same); each template's own prefix length
sets where positions shift (the official code uses template 1's for both; equal for the default
templates); the [MASK] is located by position, not by searching the ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankcse.batching import by_length, pad_ids
from rankcse.encoder import eval_mode
from rankcse.errors import ConfigError
from rankcse.losses import cosine_matrix, info_nce
from rankcse.methods.base import Batch, Method, MethodArgs, MethodOutput, Recipe, register_method
from rankcse.methods.common import special_token_ids, split_views

SENTENCE_SLOT = "[X]"
MASK_SLOT = "[MASK]"


@dataclass
class PromptBERTArgs(MethodArgs):
    """PromptBERT settings; defaults are ``run.sh`` case ``unsup-bert``."""

    template: str = 'This sentence of "[X]" means [MASK] .'  # run.sh TEMPLATE (view 1 and evaluation)
    template2: str = 'This sentence : "[X]" means [MASK] .'  # run.sh TEMPLATE2, --mask_embedding_sentence_different_template (view 2)
    denoise: bool = True  # run.sh --mask_embedding_sentence_delta (training)
    delta_freeze: bool = False  # train.py default of --mask_embedding_sentence_delta_freeze: δ keeps its gradient
    eval_denoise: bool = False  # run.sh/eval_only.sh unsup-bert evaluate without --mask_embedding_sentence_delta
    eval_add_period: bool = True  # evaluation.py::batcher appends "." unless the sentence ends in . ? " '

    def __post_init__(self) -> None:
        for name in ("template", "template2"):
            text = getattr(self, name)
            if text.count(SENTENCE_SLOT) != 1 or text.count(MASK_SLOT) != 1:
                raise ConfigError(f"promptbert {name} must contain {SENTENCE_SLOT} and {MASK_SLOT} once each, got {text!r}")


@dataclass(frozen=True)
class Template:
    """A tokenized template: ``prefix`` ids (with [CLS]) before the sentence, ``suffix`` ids (with [SEP]) after it."""

    text: str
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    mask_in_prefix: int | None  # index of [MASK] in the prefix, or None when it is in the suffix
    mask_in_suffix: int | None

    @classmethod
    def parse(cls, text: str, tokenizer: object) -> Template:
        """Tokenize the two sides of the sentence slot; the template's own special tokens wrap it."""
        if tokenizer.mask_token is None:
            raise ConfigError("promptbert needs a tokenizer with a mask token ([MASK]); use a BERT-like model")
        cls_id, sep_id = special_token_ids(tokenizer)
        before, after = (part.replace(MASK_SLOT, tokenizer.mask_token) for part in text.split(SENTENCE_SLOT))

        def ids(part: str) -> list[int]:
            return tokenizer(part.strip(), add_special_tokens=False)["input_ids"] if part.strip() else []

        prefix, suffix = (cls_id, *ids(before)), (*ids(after), sep_id)
        mask_id = tokenizer.mask_token_id
        if (prefix + suffix).count(mask_id) != 1:
            raise ConfigError(f"promptbert template {text!r} must tokenize to exactly one mask token")
        in_prefix = prefix.index(mask_id) if mask_id in prefix else None
        in_suffix = suffix.index(mask_id) if mask_id in suffix else None
        return cls(text, prefix, suffix, in_prefix, in_suffix)

    def wrap(self, sentence_ids: Sequence[int]) -> tuple[list[int], int]:
        """The input ids of a sentence in the template, and the position of its [MASK]."""
        row = [*self.prefix, *sentence_ids, *self.suffix]
        if self.mask_in_prefix is not None:
            return row, self.mask_in_prefix
        return row, len(self.prefix) + len(sentence_ids) + self.mask_in_suffix

    def alone(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Template-only inputs for sentence lengths k: ``(input_ids, position_ids, mask position)``;
        positions after the slot shift by k."""
        ids = torch.tensor([*self.prefix, *self.suffix], dtype=torch.long, device=lengths.device)
        positions = torch.arange(ids.shape[0], device=lengths.device).repeat(lengths.shape[0], 1)
        positions[:, len(self.prefix) :] += lengths.unsqueeze(1)
        mask_pos = self.mask_in_prefix if self.mask_in_prefix is not None else len(self.prefix) + self.mask_in_suffix
        return ids.repeat(lengths.shape[0], 1), positions, mask_pos

    def ids(self) -> dict[str, list[int]]:
        """JSON form (stored with checkpoints)."""
        return {"prefix": list(self.prefix), "suffix": list(self.suffix)}


def add_period(sentence: str) -> str:
    """Append "." unless the sentence already ends in . ? " or ' (``evaluation.py::batcher``)."""
    return sentence + "." if sentence and sentence[-1] not in ".?\"'" else sentence


@register_method
class PromptBERT(Method):
    """InfoNCE between two template views of each sentence, on denoised [MASK] states.

    Inputs: raw sentences; view 1 uses ``template``, view 2 ``template2``.
    Returns: ``parts = {"cl": InfoNCE}``.
    Evaluation: its own representation (:meth:`embed`), the [MASK] state of ``template``.
    References: Jiang et al., "PromptBERT: Improving BERT Sentence Embeddings with Prompts",
    EMNLP 2022. Relations: SimCSE with prompt-based views and representation.
    """

    name = "promptbert"
    args_class = PromptBERTArgs
    recipe = Recipe(batch_size=256, learning_rate=1e-5, epochs=1)  # run.sh unsup-bert
    #: ``cls`` = train with the MLP head, ``cls_before_pooler`` = without; the pooled state is always the [MASK].
    poolers = ("cls", "cls_before_pooler")
    args: PromptBERTArgs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = self.encoder.tokenizer
        self.templates = (Template.parse(self.args.template, tokenizer), Template.parse(self.args.template2, tokenizer))

    # -- data -----------------------------------------------------------------------------------
    def sentence_ids(self, sentences: Sequence[str], limit: int | None) -> list[list[int]]:
        """Word-piece ids of each sentence without special tokens, cut to ``limit``."""
        ids = self.encoder.tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
        return [list(row[:limit]) if limit is not None else list(row) for row in ids]

    def collate(self, sentences: Sequence[str], rng: np.random.Generator) -> Batch:
        ids = self.sentence_ids(sentences, self.max_len)  # truncated before the template is added (train.py)
        rows, mask_pos = [], []
        for template in self.templates:
            for s in ids:
                row, pos = template.wrap(s)
                rows.append(row)
                mask_pos.append(pos)
        lengths = [len(s) for s in ids] * 2
        return {"tokens": pad_ids(rows, self.encoder.tokenizer), "mask_pos": torch.tensor(mask_pos), "sent_len": torch.tensor(lengths)}

    # -- representation -------------------------------------------------------------------------
    def template_bias(self, template: Template, lengths: torch.Tensor) -> torch.Tensor:
        """δ_T[k] for each k in ``lengths`` (N,): the [MASK] state of the template alone, positions shifted by k."""
        unique, inverse = torch.unique(lengths, return_inverse=True)
        ids, positions, mask_pos = template.alone(unique)
        hidden = self.encoder.backbone(input_ids=ids, position_ids=positions).last_hidden_state
        return hidden[:, mask_pos][inverse]

    def mask_states(self, tokens: dict[str, torch.Tensor], mask_pos: torch.Tensor) -> torch.Tensor:
        """Last-layer states (N, d) at each row's [MASK]."""
        hidden = self.encoder.hidden_states(tokens)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), mask_pos]

    # -- training -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> MethodOutput:
        tokens, mask_pos, lengths = batch["tokens"], batch["mask_pos"], batch["sent_len"]
        n = mask_pos.shape[0] // 2
        pre = self.mask_states(tokens, mask_pos)
        if self.args.denoise:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.args.delta_freeze):
                bias = torch.cat([self.template_bias(t, lengths[i * n : (i + 1) * n]) for i, t in enumerate(self.templates)], dim=0)
            pre = pre - bias
        post = self.encoder.head(pre) if self.encoder.head is not None else pre
        z1, z2, views = split_views(pre, post, n)
        loss = info_nce(cosine_matrix(z1, z2) / self.temperature)
        return MethodOutput(loss=loss, parts={"cl": loss}, views=views)

    # -- evaluation -----------------------------------------------------------------------------
    @property
    def eval_uses_head(self) -> bool:
        """Whether evaluation applies the MLP (only when it was trained with it and ``mlp_only_train`` is off)."""
        return self.encoder.head is not None and not self.encoder.mlp_only_train

    @property
    def eval_representation(self) -> str:
        name = "prompt_mask_denoised" if self.args.eval_denoise else "prompt_mask"
        return name + ("_mlp" if self.eval_uses_head else "")

    def representation_spec(self) -> dict[str, Any]:
        a = self.args
        return {
            "kind": "prompt_mask",
            "template": a.template,
            "template_ids": self.templates[0].ids(),
            "denoise": a.eval_denoise,
            "add_period": a.eval_add_period,
            "mlp": self.eval_uses_head,
        }

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Evaluation embeddings (N, d): the [MASK] state of ``template`` (minus δ with ``eval_denoise``), eval mode."""
        template, encoder = self.templates[0], self.encoder
        texts = [add_period(s) for s in sentences] if self.args.eval_add_period else list(sentences)
        ids = self.sentence_ids(texts, encoder.eval_max_length - len(template.prefix) - len(template.suffix))
        with eval_mode(self):
            bias_table = None
            if self.args.eval_denoise and ids:
                lengths = torch.tensor(sorted({len(s) for s in ids}), device=encoder.device)
                with encoder.autocast():
                    table = self.template_bias(template, lengths).float()
                bias_table = dict(zip(lengths.tolist(), table))

            def represent(batch: dict[str, torch.Tensor]) -> torch.Tensor:
                mask_pos, sent_len = batch.pop("mask_pos"), batch.pop("sent_len")
                vec = self.mask_states(batch, mask_pos).float()
                if bias_table is not None:
                    vec = vec - torch.stack([bias_table[k] for k in sent_len.tolist()])
                return encoder.head(vec).float() if self.eval_uses_head else vec

            return encoder.embed_batches(self._prompt_batches(template, ids, batch_size), len(sentences), represent)

    def _prompt_batches(
        self, template: Template, ids: list[list[int]], batch_size: int
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Length-sorted batches of sentences wrapped in ``template``, with their [MASK] positions and sentence lengths."""
        for idx in by_length(ids, batch_size):
            wrapped = [template.wrap(ids[i]) for i in idx]
            batch = pad_ids([w[0] for w in wrapped], self.encoder.tokenizer)
            batch["mask_pos"] = torch.tensor([w[1] for w in wrapped])
            batch["sent_len"] = torch.tensor([len(ids[i]) for i in idx])
            yield idx, batch
