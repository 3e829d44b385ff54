"""Batching for embedding and training inputs: right-padding token-id lists and length-sorted batches (less padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def pad_ids(rows: Sequence[Sequence[int]], tokenizer: object) -> dict[str, torch.Tensor]:
    """Right-pad token-id lists into ``input_ids``/``attention_mask`` (and zero ``token_type_ids`` where the model takes them)."""
    width = max(len(r) for r in rows)
    pad_id = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        attention_mask[i, : len(row)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        batch["token_type_ids"] = torch.zeros_like(input_ids)
    return batch


def by_length(rows: Sequence[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``rows`` in batches of ``batch_size``, shortest rows first, so each batch pads little."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
