"""GLUE's TSV readers on files written in the real layouts, and the catalogue's GLUE and
model entries (no transformers needed)."""

from __future__ import annotations

import pathlib

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.datasets import DataUnavailableError, catalog
from demon_optim.study.datasets import glue as glue_data
from tests.study.text_files import write_glue


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A data folder with GLUE in the real layouts."""
    root = tmp_path_factory.mktemp("glue-data")
    write_glue(root)
    return root


# --- GLUE readers -------------------------------------------------------------------------------


def test_glue_readers_read_every_task_in_its_real_layout(data_dir: pathlib.Path) -> None:
    for task, folder in glue_data.GLUE_FOLDERS.items():
        files = glue_data.read_glue_task(data_dir / "glue_data" / folder, task)
        assert set(files) == set(glue_data.GLUE_SPLITS[task])
        train = files["train"]
        assert len(train) == 40 and (train.text_b is None) == (task in ("cola", "sst2"))
        for examples in files.values():
            assert all(isinstance(t, str) and t for t in examples.text_a)
            if task == "stsb":
                assert all(isinstance(v, float) and 0 <= v <= 5 for v in examples.labels)
            else:
                classes = len(glue_data.LAYOUTS[task].labels)
                assert set(examples.labels) <= set(range(classes))
    qqp = glue_data.read_glue_file(data_dir / "glue_data/QQP/train.tsv", "qqp")
    assert qqp.skipped == 1 and len(qqp) == 40  # the short row is skipped and counted
    mrpc = glue_data.read_glue_file(data_dir / "glue_data/MRPC/train.tsv", "mrpc")
    assert all(text.endswith(' "') for text in mrpc.text_a)  # quotes are text
    mnli = glue_data.read_glue_file(data_dir / "glue_data/MNLI/dev_matched.tsv", "mnli")
    assert len(mnli) == 12  # gold_label is the last of 16 columns


def test_glue_reader_values(tmp_path: pathlib.Path) -> None:
    cola = tmp_path / "cola.tsv"
    cola.write_text('gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode the sailors "the.\n')
    examples = glue_data.read_glue_file(cola, "cola")
    assert examples.text_a == ("The sailors rode.", 'Rode the sailors "the.')
    assert examples.labels == (1, 0) and examples.text_b is None
    mnli = tmp_path / "mnli.tsv"
    header = "index\tsentence1\tsentence2\tlabel1\tgold_label\n"
    rows = "0\ta\tb\tneutral\tneutral\n1\tc\td\t-\t-\n2\te\tf\tx\tcontradiction\n"
    mnli.write_text(header + rows)
    examples = glue_data.read_glue_file(mnli, "mnli")
    assert examples.labels == (2, 0) and examples.skipped == 1  # "-": no gold label
    stsb = tmp_path / "stsb.tsv"
    stsb.write_text("sentence1\tsentence2\tscore\nx\ty\t3.800\n")
    assert glue_data.read_glue_file(stsb, "stsb").labels == (3.8,)


def test_glue_reader_errors_name_the_file(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel_x\nfine\t1\n")
    with pytest.raises(ConfigError, match=r"train\.tsv: no column 'label' in its header"):
        glue_data.read_glue_file(bad, "sst2")
    with pytest.raises(ConfigError, match="file not found"):
        glue_data.read_glue_file(tmp_path / "none.tsv", "sst2")
    bad.write_bytes(b"sentence\tlabel\n\xff\xfe\t1\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        glue_data.read_glue_file(bad, "sst2")


def test_the_catalogue_finds_glue_under_glue_data_or_the_folder_itself(
    tmp_path: pathlib.Path, data_dir: pathlib.Path
) -> None:
    assert catalog.locate("glue-mrpc", data_dir).path == data_dir / "glue_data" / "MRPC"
    assert catalog.locate("glue-mrpc", data_dir / "glue_data").path.name == "MRPC"
    (data_dir / "model").mkdir()
    assert catalog.locate("bert-model", data_dir) is None  # not a model folder yet
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (data_dir / "model" / name).write_text("{}")
    assert catalog.locate("bert-model", data_dir).path == data_dir / "model"
    with pytest.raises(DataUnavailableError, match=r"download_glue_data\.py") as caught:
        catalog.require("glue-rte", tmp_path)
    assert f"--data_dir {tmp_path}/glue_data --tasks RTE" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(DataUnavailableError, match="huggingface-cli download bert-base-uncased"):
        catalog.require("bert-model", tmp_path)
