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
        ({"grid": {"sgdm": {"lr": [0.1, -1]}}}, ["grid.sgdm.lr[1]: got -1", "numbers > 0"]),
        ({"grid": {"sgdm": {"momentum": 1.0}}}, ["grid.sgdm.momentum[0]: got 1.0", "[0, 1)"]),
        ({"grid": {"sgdm": {"lr": []}}}, ["grid.sgdm.lr: got []"]),
        ({"grid": {"sgdm": {"lr": [0.1, 0.1]}}}, ["grid.sgdm.lr", "repeated"]),
        ({"grid": {"sgdm": {"lr": "fast"}}}, ["grid.sgdm.lr[0]: got 'fast'"]),
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
    with pytest.raises(ConfigError, match=r"momentum_range\[0\]: got \[0.8, 0.9\]"):
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
        assert expand(study)
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
