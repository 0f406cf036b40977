"""Readers of the GLUE benchmark's TSV files (Wang et al., 2018), as ``download_glue_data.py``
lays them out: ``<data-dir>/glue_data/<TASK>/train.tsv`` and ``dev.tsv`` (MNLI:
``dev_matched.tsv`` and ``dev_mismatched.tsv``), or ``<data-dir>/<TASK>/``.

Each task's real column layout:

- CoLA: no header; ``source, label, original mark, sentence``.
- SST-2: header ``sentence, label``.
- MRPC: header ``Quality, #1 ID, #2 ID, #1 String, #2 String`` (the label is ``Quality``;
  the header of the file the download script writes starts with a UTF-8 byte-order mark).
- QQP: header ``id, qid1, qid2, question1, question2, is_duplicate``; the training file has
  a few rows too short to hold every field: skipped and counted (``Examples.skipped``).
- STS-B: header ``index, genre, filename, year, old_index, source1, source2, sentence1,
  sentence2, score``; the score (a float in [0, 5]) is read from the last column, as
  GLUE's reference code reads it.
- MNLI: header with ``sentence1``, ``sentence2`` and ``gold_label`` (the last column; dev
  files carry five annotator labels before it); labels contradiction / entailment /
  neutral.
- QNLI: header ``index, question, sentence, label``; RTE: ``index, sentence1, sentence2,
  label``; labels entailment / not_entailment.
- WNLI: header ``index, sentence1, sentence2, label``; labels 0 / 1.

Fields are tab-separated with no quoting (quotes are text: MRPC and MNLI sentences hold
unbalanced ``"``), read as UTF-8. The GLUE test files carry no labels and are not read.
"""

from __future__ import annotations

import csv
import pathlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from demon_optim.study.datasets._files import bad_file

#: folder names of the nine tasks, as the download script makes them
GLUE_FOLDERS = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "stsb": "STS-B",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}

NLI_LABELS = ("contradiction", "entailment", "neutral")  # MNLI, in Hugging Face's order
ENTAILMENT_LABELS = ("entailment", "not_entailment")  # QNLI, RTE


@dataclass(frozen=True)
class Layout:
    """Where a task's fields are: header names (``None``: no header, positions instead),
    the label's values in class order (``None``: a float score)."""

    header: bool
    text_a: str | int
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None


LAYOUTS: dict[str, Layout] = {
    "cola": Layout(False, 3, None, 1, ("0", "1")),
    "sst2": Layout(True, "sentence", None, "label", ("0", "1")),
    "mrpc": Layout(True, "#1 String", "#2 String", "Quality", ("0", "1")),
    "qqp": Layout(True, "question1", "question2", "is_duplicate", ("0", "1")),
    "stsb": Layout(True, "sentence1", "sentence2", -1, None),
    "mnli": Layout(True, "sentence1", "sentence2", -1, NLI_LABELS),
    "qnli": Layout(True, "question", "sentence", "label", ENTAILMENT_LABELS),
    "rte": Layout(True, "sentence1", "sentence2", "label", ENTAILMENT_LABELS),
    "wnli": Layout(True, "sentence1", "sentence2", "label", ("0", "1")),
}

#: the labelled files of each task: split name -> file name
GLUE_SPLITS: dict[str, dict[str, str]] = {
    task: (
        {"train": "train.tsv", "dev_matched": "dev_matched.tsv",
         "dev_mismatched": "dev_mismatched.tsv"}
        if task == "mnli"
        else {"train": "train.tsv", "dev": "dev.tsv"}
    )
    for task in GLUE_FOLDERS
}  # fmt: skip


@dataclass(frozen=True)
class Examples:
    """One labelled file: sentences (``text_b`` is None for single-sentence tasks), labels
    (class indices, or STS-B's float scores) and how many malformed rows were skipped."""

    text_a: tuple[str, ...]
    text_b: tuple[str, ...] | None
    labels: tuple[int, ...] | tuple[float, ...]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)


def task_files(task: str) -> tuple[str, ...]:
    """The file names a complete copy of ``task``'s folder holds."""
    return tuple(GLUE_SPLITS[task].values())


def read_glue_file(path: pathlib.Path, task: str) -> Examples:
    """The examples of one GLUE TSV file of ``task`` (a key of :data:`GLUE_FOLDERS`).

    Rows too short to hold the task's fields, or with a label outside the task's (e.g. an
    unannotated ``-``), are skipped and counted in ``skipped``; a file that is missing, not
    UTF-8, lacks the header's columns or has no usable row is a ConfigError naming it.
    """
    layout = LAYOUTS[task]
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: MRPC's BOM
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except FileNotFoundError:
        raise bad_file(path, "file not found") from None
    except UnicodeDecodeError as error:
        raise bad_file(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise bad_file(path, f"cannot read ({error.strerror or error})") from None
    if layout.header:
        if not rows:
            raise bad_file(path, f"empty; expected a GLUE {GLUE_FOLDERS[task]} file")
        header, rows = [name.strip() for name in rows[0]], rows[1:]
        fields = [_column(path, task, header, f) for f in (layout.text_a, layout.text_b)]
        label = _column(path, task, header, layout.label)
    else:
        fields, label = [layout.text_a, layout.text_b], layout.label
    columns = [f for f in (*fields, label) if f is not None]
    needed = max(c + 1 if c >= 0 else -c for c in columns)
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list = []
    skipped = 0
    for row in rows:
        if len(row) < needed:
            skipped += 1
            continue
        value = _label(row[label].strip(), layout.labels)
        if value is None:
            skipped += 1
            continue
        text_a.append(row[fields[0]])
        if fields[1] is not None:
            text_b.append(row[fields[1]])
        labels.append(value)
    if not labels:
        raise bad_file(
            path, f"no usable rows ({skipped} malformed); expected a GLUE {GLUE_FOLDERS[task]} file"
        )
    return Examples(
        tuple(text_a), None if fields[1] is None else tuple(text_b), tuple(labels), skipped
    )


def _column(
    path: pathlib.Path, task: str, header: Sequence[str], field: str | int | None
) -> int | None:
    if field is None or isinstance(field, int):
        return field
    try:
        return header.index(field)
    except ValueError:
        raise bad_file(
            path,
            f"no column {field!r} in its header {list(header)}; expected a GLUE "
            f"{GLUE_FOLDERS[task]} file",
        ) from None


def _label(text: str, labels: tuple[str, ...] | None) -> int | float | None:
    if labels is None:  # STS-B: a similarity score
        try:
            return float(text)
        except ValueError:
            return None
    try:
        return labels.index(text)
    except ValueError:
        return None


def read_glue_task(folder: pathlib.Path, task: str) -> dict[str, Examples]:
    """Every labelled file of ``task`` in its folder, by split name (:data:`GLUE_SPLITS`)."""
    return {split: read_glue_file(folder / name, task) for split, name in GLUE_SPLITS[task].items()}
