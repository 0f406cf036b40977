"""Study files and presets: parsing, validation messages, expansion, trial ids."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study.methods import method_names
from demon_optim.study.presets import preset_names
from demon_optim.study.spec import PROTOCOL_VERSION, TrialSpec, expand, load_study, parse_study
from demon_optim.study.tasks import task_names

BASE = {"tasks": ["digits-mlp"], "methods": ["sgdm"], "seeds": [0]}


def write(tmp_path: pathlib.Path, text: str, name: str = "study.toml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def parse(**changes: object) -> object:
    return parse_study({**BASE, **changes})


def test_study_file_round_trip(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        """
        name = "mine"
        tasks = ["digits-mlp"]
        methods = ["sgdm", "demon-sgdm"]
        seeds = [0, 1]
        epochs = [2, 4]
        batch_size = 50
        data_dir = "data"

        [grid.sgdm]
        lr = [0.03, 0.1]
        momentum = 0.9

        [grid.demon-sgdm]
        lr = 0.1
        momentum = [0.9, 0.95]
        """,
    )
    study = load_study(path)
    assert study.name == "mine"
    assert study.epochs == (2, 4)
    assert study.batch_size == 50
    assert study.data_dir == str((tmp_path / "data").resolve())
    assert study.grids["sgdm"] == {"lr": (0.03, 0.1), "momentum": (0.9,)}
    specs = expand(study)
    # 2 budgets x (sgdm 2 configs + demon 2 configs) x 2 seeds
    assert len(specs) == 2 * (2 + 2) * 2
    assert len({s.trial_id for s in specs}) == len(specs)
    first = specs[0]
    assert (first.task, first.method, first.epochs, first.batch_size, first.seed) == (
        "digits-mlp",
        "sgdm",
        2,
        50,
        0,
    )
    assert first.config == {"lr": 0.03, "momentum": 0.9, "weight_decay": 0.0}


def test_name_defaults_to_file_stem(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path, 'tasks = ["digits-mlp"]\nmethods = ["adam"]\nseeds = [3]\n', "my-run.toml"
    )
    study = load_study(path)
    assert study.name == "my-run"
    assert study.epochs == ()  # the task's default budget
    (spec,) = [s for s in expand(study) if s.config["lr"] == 1e-3 and s.config["momentum"] == 0.9]
    assert spec.epochs == 20 and spec.batch_size == 100 and spec.seed == 3


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"tasks": ["digits-mlp", "cifar"]},
            ["tasks[1]: got 'cifar'", "digits-mlp", "mnist1d-mlp"],
        ),
        ({"methods": ["sgdm", "adam", "sgd"]}, ["methods[2]: got 'sgd'", "demon-sgdm", "adamw"]),
        ({"seeds": [0, -1]}, ["seeds[1]: got -1", "non-negative integers"]),
        ({"seeds": 2}, ["seeds: got 2", "a list"]),
        ({"seeds": [0, 0]}, ["seeds: got [0, 0]", "repeated"]),
        ({"epochs": 0}, ["epochs: got 0", "positive integers"]),
        ({"epochs": [5, 2.5]}, ["epochs[1]: got 2.5"]),
        ({"batch_size": "big"}, ["batch_size: got 'big'", "positive integers"]),
        ({"name": "a b"}, ["name: got 'a b'"]),
        ({"methods": []}, ["methods: got []"]),
        ({"tasks": "digits-mlp"}, ["tasks: got 'digits-mlp'", "list"]),
        ({"grid": {"adam": {"lr": 0.1}}}, ["grid: got 'adam'", "sgdm"]),
        ({"grid": {"sgdm": {"beta": 0.1}}}, ["grid.sgdm.beta: got 'beta'", "lr, momentum"]),
        ({"grid": {"sgdm": {"lr": [0.1, -1]}}}, ["grid.sgdm.lr[1]: got -1", "numbers >= 0"]),
        ({"grid": {"sgdm": {"momentum": 1.0}}}, ["grid.sgdm.momentum: got 1.0", "[0, 1)"]),
        ({"grid": {"sgdm": {"lr": []}}}, ["grid.sgdm.lr: got []"]),
        ({"grid": {"sgdm": {"lr": [0.1, 0.1]}}}, ["grid.sgdm.lr", "repeated"]),
        ({"grid": {"sgdm": {"lr": "fast"}}}, ["grid.sgdm.lr: got 'fast'"]),
        ({"typo": 1}, ["study: got 'typo'", "methods", "grid"]),
    ],
)
def test_bad_values_name_field_value_and_choices(
    changes: dict[str, object], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(**changes)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_missing_keys() -> None:
    for key in ("tasks", "methods", "seeds"):
        data = {k: v for k, v in BASE.items() if k != key}
        with pytest.raises(ConfigError, match=f"^{key}: missing"):
            parse_study(data)


def test_unknown_method_error_lists_every_method() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(methods=["nope"])
    assert all(name in str(caught.value) for name in method_names())


def test_unknown_task_error_lists_every_task() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tasks=["nope"])
    assert all(name in str(caught.value) for name in task_names())


def test_momentum_range_accepts_one_pair_or_a_list_of_pairs() -> None:
    one = parse(methods=["sgdm+onecycle"], grid={"sgdm+onecycle": {"momentum_range": [0.95, 0.85]}})
    assert one.grids["sgdm+onecycle"]["momentum_range"] == ((0.95, 0.85),)
    two = parse(
        methods=["sgdm+onecycle"],
        grid={"sgdm+onecycle": {"momentum_range": [[0.95, 0.85], [0.9, 0.85]]}},
    )
    assert two.grids["sgdm+onecycle"]["momentum_range"] == ((0.95, 0.85), (0.9, 0.85))
    with pytest.raises(ConfigError, match=r"momentum_range: got \[0.8, 0.9\]"):
        parse(methods=["sgdm+onecycle"], grid={"sgdm+onecycle": {"momentum_range": [0.8, 0.9]}})


def test_bad_toml_and_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study(write(tmp_path, "tasks = [\n"))
    with pytest.raises(ConfigError) as caught:
        load_study(tmp_path / "absent.toml")
    assert "study: got" in str(caught.value) and "quick" in str(caught.value)


def test_trial_id_is_stable_and_covers_every_field() -> None:
    spec = TrialSpec(
        task="digits-mlp",
        method="sgdm",
        hyperparameters=(("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0)),
        seed=0,
        epochs=2,
        batch_size=100,
    )
    canonical = json.dumps(spec.identity(), sort_keys=True, separators=(",", ":"))
    assert f'"protocol":{PROTOCOL_VERSION}' in canonical
    assert len(spec.trial_id) == 64
    assert spec.trial_id == dataclasses.replace(spec, data_dir="/elsewhere").trial_id
    changed = [
        dataclasses.replace(spec, task="mnist1d-mlp"),
        dataclasses.replace(spec, method="demon-sgdm"),
        dataclasses.replace(spec, hyperparameters=(("lr", 0.3), *spec.hyperparameters[1:])),
        dataclasses.replace(spec, seed=1),
        dataclasses.replace(spec, epochs=3),
        dataclasses.replace(spec, batch_size=50),
        dataclasses.replace(spec, protocol=PROTOCOL_VERSION + 1),
    ]
    assert len({spec.trial_id, *(c.trial_id for c in changed)}) == len(changed) + 1
    assert TrialSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_integer_and_float_values_give_the_same_trial() -> None:
    a = expand(parse(grid={"sgdm": {"lr": 1, "momentum": 0.9, "weight_decay": 0}}))
    b = expand(parse(grid={"sgdm": {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0}}))
    assert [s.trial_id for s in a] == [s.trial_id for s in b]


def test_presets() -> None:
    assert {"quick", "smoke"} <= set(preset_names())
    for name in preset_names():
        study = load_study(name)
        assert study.name == name
        assert expand(study) or study.searches  # a sampled method's trials are drawn later
    quick = load_study("quick")
    assert set(quick.tasks) <= {"mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru"}
    assert {"sgdm", "demon-sgdm", "adam", "demon-adam"} <= set(quick.methods)
    assert len(quick.seeds) == 2
    specs = expand(quick)
    for method in ("sgdm", "demon-sgdm"):  # the 3 x 3 lr x momentum product for heatmaps
        configs = {(s.config["lr"], s.config["momentum"]) for s in specs if s.method == method}
        lrs, momenta = {c[0] for c in configs}, {c[1] for c in configs}
        assert len(lrs) == 3 and len(momenta) == 3 and len(configs) == 9


def test_the_documented_example_is_valid(tmp_path: pathlib.Path) -> None:
    docs = pathlib.Path(__file__).parents[2] / "docs" / "study.md"
    example = re.search(r"```toml\n(.*?)```", docs.read_text(), re.S).group(1)
    study = load_study(write(tmp_path, example, "lr-momentum.toml"))
    assert study.name == "lr-momentum" and len(expand(study)) == 504  # as the docs say


# --- names, encodings and bounds (issue 12) ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["abc\n", "a" * 101, ".hidden", "-x", "_x", "a/b", "a b", "é", "", "a\0b"]
)
def test_names_that_would_make_bad_file_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(name=name)
    message = str(caught.value)
    assert message.startswith(f"name: got {name!r}; allowed: ASCII letters, digits")
    assert "at most 100 characters" in message and "\n" not in message


def test_names_at_the_bounds_are_accepted() -> None:
    for name in ("a" * 100, "A.b_c-9", "9lives"):
        assert parse(name=name).name == name


def test_a_file_name_that_cannot_name_a_study_says_so(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, 'tasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [0]\n', "a b.toml")
    with pytest.raises(ConfigError, match=r"^name \(the study file's name, as no name is set\)"):
        load_study(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfname = "bom"\ntasks = ["digits-mlp"]\nmethods = ["sgdm"]\n')
    path.write_bytes(path.read_bytes() + b"seeds = [0]\n")
    assert load_study(path).name == "bom"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"epochs": 2**63 - 1},
            "epochs: got 9223372036854775807; allowed: positive integers up to 1,000,000",
        ),
        ({"epochs": [5, 10**6 + 1]}, "epochs[1]: got 1000001"),
        (
            {"batch_size": 10**6 + 1},
            "batch_size: got 1000001; allowed: positive integers up to 1,000,000",
        ),
        ({"batch_size": -5}, "batch_size: got -5"),
        (
            {"seeds": [2**32]},
            "seeds[0]: got 4294967296; allowed: non-negative integers up to 2**32 - 1",
        ),
        ({"seeds": [2**63]}, "seeds[0]: got 9223372036854775808"),
        ({"grid": {"sgdm": {"lr": 10**400}}}, "grid.sgdm.lr: got 1000"),
        (
            {"data_dir": "a\0b"},
            "data_dir: got 'a\\x00b'; allowed: a path (a non-empty string without NUL)",
        ),
    ],
)
def test_values_no_trial_can_use_are_refused(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(**changes)
    assert fragment in str(caught.value)


def test_token_budget_bound() -> None:
    base = {**BASE, "tasks": ["ptb-lstm-small"]}
    assert parse_study({**base, "token_budget": 10**9}).token_budget == 10**9
    with pytest.raises(
        ConfigError,
        match=r"token_budget: got 1000000001; allowed: positive integers up to 1,000,000,000",
    ):
        parse_study({**base, "token_budget": 10**9 + 1})


def test_bounds_themselves_are_accepted() -> None:
    study = parse(epochs=10**6, batch_size=10**6, seeds=[0, 2**32 - 1])
    assert study.epochs == (10**6,) and study.batch_size == 10**6
    assert study.seeds == (0, 2**32 - 1)


def test_an_integer_too_long_for_python_is_a_toml_error(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path, 'tasks = ["digits-mlp"]\nmethods = ["sgdm"]\nseeds = [1' + "0" * 5000 + "]\n"
    )
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_study(path)


def test_data_dirs_that_pathlib_cannot_resolve_are_kept(tmp_path: pathlib.Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    assert parse(data_dir=str(loop)).data_dir == str(loop)
    user = "~no-such-user-h12"
    assert parse(data_dir=f"{user}/data").data_dir.endswith(f"{user}/data")


def test_a_directory_is_not_a_study_file(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"study: got '.*dir.toml'; .*\(it is a directory\)$"):
        load_study(folder)
