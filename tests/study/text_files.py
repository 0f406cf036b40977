"""Test fixtures for the text tasks, written at test time: GLUE folders in the real TSV
layouts (few rows each) and a tiny randomly initialised BERT model folder (no downloads)."""

from __future__ import annotations

import pathlib
import random

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "awful",
    "not",
    "very",
    "plot",
    "actors",
    "boring",
    "fun",
    "who",
    "what",
    "does",
    "man",
    "woman",
    "dog",
    "ran",
    "sat",
    "on",
    "mat",
    "question",
    "answer",
    "why",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentence(rng: random.Random, n: int | None = None) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(2, 9)))


def write_tiny_model(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A Hugging Face folder: WordPiece vocab of :data:`WORDS`, a 1-layer hidden-16 BERT
    encoder (``BertModel``, saved as a pretrained checkpoint is: no task head)."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(folder / "vocab.txt"))  # vocab file
    tokenizer.save_pretrained(str(folder))
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    transformers.BertModel(config).save_pretrained(str(folder))
    return folder


def _tsv(path: pathlib.Path, rows: list[list[str]], header: list[str] | None, bom=False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([("\ufeff" if bom else "") + "\t".join(header)] if header else []) + [
        "\t".join(row) for row in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


MNLI_TRAIN_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
MNLI_DEV_HEADER = [*MNLI_TRAIN_HEADER[:-1], "label2", "label3", "label4", "label5", "gold_label"]
NLI = ("contradiction", "entailment", "neutral")
ENTAIL = ("entailment", "not_entailment")


def _rows(task: str, split: str, n: int, rng: random.Random) -> tuple[list, list | None]:
    """(rows, header) of one file of ``task`` in its real layout."""
    s = lambda: sentence(rng)  # noqa: E731
    bit = lambda: rng.choice("01")  # noqa: E731
    if task == "CoLA":  # no header: source, label, original mark, sentence
        rows = []
        for _ in range(n):
            label = bit()
            rows.append(["gj04", label, "" if label == "1" else "*", s()])
        return rows, None
    if task == "SST-2":
        return [[s(), bit()] for _ in range(n)], ["sentence", "label"]
    if task == "MRPC":  # quotes are text: an unbalanced one in each first sentence
        header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        return [[bit(), str(i), str(i + 1), s() + ' "', s()] for i in range(n)], header
    if task == "QQP":
        header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
        rows = [[str(i), str(2 * i), str(2 * i + 1), s(), s(), bit()] for i in range(n)]
        if split == "train":
            rows.insert(3, ["99999", "1", "2", "a question broken"])  # short: skipped
        return rows, header
    if task == "STS-B":
        header = [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ]
        rows = [
            [str(i), "main-captions", "MSRvid", "2012test", str(i), "none", "none", s(), s(),
             f"{rng.uniform(0, 5):.3f}"]
            for i in range(n)
        ]  # fmt: skip
        return rows, header
    if task == "MNLI":
        header = MNLI_TRAIN_HEADER if split == "train" else MNLI_DEV_HEADER
        labels = 1 if split == "train" else 5
        rows = []
        for i in range(n):
            gold = rng.choice(NLI)
            a, b = s(), s()
            rows.append(
                [str(i), str(i), f"{i}e", "fiction", f"( {a} )", f"( {b} )", f"(ROOT {a})",
                 f"(ROOT {b})", a, b, *([gold] * labels), gold]
            )  # fmt: skip
        return rows, header
    if task == "QNLI":
        header = ["index", "question", "sentence", "label"]
        return [[str(i), s() + " ?", s(), rng.choice(ENTAIL)] for i in range(n)], header
    if task in ("RTE", "WNLI"):
        header = ["index", "sentence1", "sentence2", "label"]
        label = (lambda: rng.choice(ENTAIL)) if task == "RTE" else bit
        return [[str(i), s(), s(), label()] for i in range(n)], header
    raise ValueError(task)


GLUE_TASKS = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")


def write_glue(
    root: pathlib.Path, n_train: int = 40, n_dev: int = 12, seed: int = 0, tasks=GLUE_TASKS
) -> pathlib.Path:
    """``root/glue_data/<TASK>/`` for every task, as download_glue_data.py lays it out."""
    rng = random.Random(seed)
    for task in tasks:
        folder = root / "glue_data" / task
        dev = ("dev_matched", "dev_mismatched") if task == "MNLI" else ("dev",)
        for split, n in (("train", n_train), *((d, n_dev) for d in dev)):
            rows, header = _rows(task, split, n, rng)
            _tsv(folder / f"{split}.tsv", rows, header, bom=task == "MRPC")
        _tsv(folder / "test.tsv", [["0", sentence(rng)]], ["index", "sentence"])  # unlabelled
    return root / "glue_data"
