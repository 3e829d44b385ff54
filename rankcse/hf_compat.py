"""The one door to transformers' internals: everything rankcse uses beyond transformers' public top-level API.

ruff's banned-api rule (TID251, pyproject ``[tool.ruff.lint.flake8-tidy-imports.banned-api]``) rejects an import of these
modules anywhere else, so a new dependency on transformers' internals lands here, next to the versions it was tested with:

- ``transformers.masking_utils.create_bidirectional_mask`` (new in transformers 5.0; the floor in pyproject): the
  attention mask of InfoCSE's auxiliary transformer layers, in the form the model's attention implementation expects;
- ``transformers.activations.ACT2FN``: the activation a config names (InfoCSE's LM head);
- ``transformers.utils.logging``: silencing ``from_pretrained``'s chatter.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch

log = logging.getLogger("rankcse")

#: The transformers release series (major.minor) the test suite ran on; others get a one-line warning when a run starts.
TESTED_TRANSFORMERS = ("5.25",)
#: The oldest transformers with what this module needs (``create_bidirectional_mask``); pyproject's floor says the same.
MIN_TRANSFORMERS = "5.0"


def untested_version(version: str) -> str | None:
    """The warning for transformers ``version`` when it is outside :data:`TESTED_TRANSFORMERS`, else None."""
    series = ".".join(version.split(".")[:2])
    if series in TESTED_TRANSFORMERS:
        return None
    return (
        f"transformers {version} is untested with rankcse (tested: {', '.join(s + '.x' for s in TESTED_TRANSFORMERS)}; "
        f"needs >= {MIN_TRANSFORMERS}): if InfoCSE or loading models fails, install a tested version"
    )


def warn_if_untested() -> None:
    """Log :func:`untested_version`'s one line for the installed transformers, if it has one."""
    import transformers

    message = untested_version(transformers.__version__)
    if message:
        log.warning(message)


def bidirectional_mask(config: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """The full (bidirectional) attention mask of a padded batch for a BERT-like layer of ``config``'s attention implementation.

    Arguments are passed by position: transformers 5.0 and 5.1 call the second one ``input_embeds``, 5.2 on ``inputs_embeds``.
    """
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config, inputs_embeds, attention_mask)


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation module a config names (``gelu``, ``relu``, ...)."""
    from transformers.activations import ACT2FN

    return ACT2FN[name]


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
