"""Hugging Face sequence classifiers for the text tasks: loaded from a local folder only.

``transformers`` is an optional dependency (``pip install 'demon-optim[text]'``), imported
here lazily: importing this module costs nothing, and a missing package is one line
(:func:`require_transformers`) instead of a traceback.

:class:`SequenceClassifier` wraps a ``...ForSequenceClassification`` model so that the
harness calls it like any other model, ``model(input_ids) -> logits``: the attention mask
is derived from the pad id and, for sentence pairs, the segment ids from the first
``[SEP]`` (BERT's pair encoding ``[CLS] a [SEP] b [SEP]``), so a data split holds only one
padded id tensor.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from typing import Any

import torch

from demon_optim.errors import ConfigError
from demon_optim.study.datasets import DataUnavailableError

INSTALL = "pip install 'demon-optim[text]'"
# parameters a pretrained checkpoint may lack: the new task head (and a pooler that some
# exports leave out); anything else missing means the folder is not the model's
HEAD_PREFIXES = ("classifier.", "pre_classifier.", "score.")


def require_transformers() -> Any:
    """The ``transformers`` module; a DataUnavailableError saying how to get it if absent."""
    try:
        import transformers
    except ImportError as error:
        raise DataUnavailableError(
            f"the text tasks need Hugging Face transformers ({error}); to get it: {INSTALL}"
        ) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[Any]:
    """``transformers`` with its info/warning logs and progress bars off inside the block
    (the "newly initialized head" load report of every trial); errors still show and
    exceptions still raise, and :func:`load_pretrained` checks what was loaded itself."""
    transformers = require_transformers()
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_tokenizer(folder: pathlib.Path) -> Any:
    """The tokenizer saved in ``folder`` (fast, local files only)."""
    with quiet_transformers() as transformers:
        try:
            return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{folder}: cannot load a tokenizer ({error})") from None


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES) or "pooler." in key


def load_pretrained(folder: pathlib.Path, num_labels: int) -> torch.nn.Module:
    """``AutoModelForSequenceClassification`` from ``folder`` with a new ``num_labels``-way
    head (1: regression), local files only.

    The new head is drawn from torch's global RNG (the trial seeds it before building the
    model). A checkpoint lacking more than the head (and pooler) is a ConfigError: its
    encoder would silently start from random weights.
    """
    with quiet_transformers() as transformers:
        try:
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(folder),
                num_labels=num_labels,
                local_files_only=True,
                ignore_mismatched_sizes=True,  # a fine-tuned head of another size: replaced
                output_loading_info=True,
            )
        except (OSError, ValueError) as error:
            raise ConfigError(f"{folder}: cannot load a model ({error})") from None
    mismatched = [entry[0] if isinstance(entry, tuple) else entry for entry in info.get(
        "mismatched_keys", ()
    )]  # fmt: skip
    missing = sorted(k for k in [*info.get("missing_keys", ()), *mismatched] if not _is_head(k))
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ConfigError(
            f"{folder}: its checkpoint lacks {len(missing)} encoder weights ({shown}); "
            "expected a pretrained model folder of the architecture its config.json names"
        )
    return model


def from_config(config: Any) -> torch.nn.Module:
    """A randomly initialised ``AutoModelForSequenceClassification`` for ``config`` (a
    ``transformers`` config object), drawn from torch's global RNG."""
    with quiet_transformers() as transformers:
        return transformers.AutoModelForSequenceClassification.from_config(config)


class SequenceClassifier(torch.nn.Module):
    """``model(input_ids) -> logits [B, num_labels]`` (``[B]`` for regression) around a
    Hugging Face sequence classifier.

    ``input_ids`` ``[B, L]`` are right-padded with ``pad_id``: the attention mask is
    ``input_ids != pad_id``. With ``pairs`` the segment ids are 1 after the first
    ``sep_id`` (the second sentence and its ``[SEP]``), 0 before it and on padding, as a
    BERT tokenizer encodes a pair.
    """

    def __init__(
        self, model: torch.nn.Module, pad_id: int, sep_id: int | None, pairs: bool, regression: bool
    ) -> None:
        super().__init__()
        if pairs and sep_id is None:
            raise ValueError("sentence pairs need the tokenizer's [SEP] id")
        self.model = model
        self.pad_id, self.sep_id = int(pad_id), sep_id
        types = getattr(getattr(model, "config", None), "type_vocab_size", 2)
        self.segments = pairs and types >= 2  # RoBERTa-like models have one segment type
        self.regression = regression

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids != self.pad_id
        extra = {}
        if self.segments:
            sep = input_ids == self.sep_id
            extra["token_type_ids"] = ((torch.cumsum(sep, 1) - sep.long()) > 0).long() * mask
        logits = self.model(input_ids=input_ids, attention_mask=mask.long(), **extra).logits
        return logits.squeeze(-1) if self.regression else logits
