"""A study as data: parse and validate a TOML file or a named preset, expand it into trials.

A study is tasks x epoch budgets x methods x each method's hyperparameter grid x seeds. Its
format (see ``docs/study.md``)::

    name = "my-study"                 # optional; default: the file's stem
    tasks = ["mnist1d-mlp"]
    methods = ["sgdm", "demon-sgdm"]
    seeds = [0, 1]
    epochs = 20                       # optional: an int or a list (budgets); default: task's
    batch_size = 100                  # optional; default: the task's
    token_budget = 200000             # optional: tokens per epoch for language-model tasks
    data_dir = "data"                 # optional; relative to the study file
    plugins = ["my_tasks.py"]         # optional: files (relative to the study file) or
                                      # module names, imported first: their tasks and methods

    [grid.sgdm]                       # optional: replaces the method's default grid per name
    lr = [0.03, 0.1]
    momentum = 0.9

    batch_trials = "auto"             # optional: "auto" | N | "off": trials trained together
                                      # (an execution strategy, not part of any trial id)

    [targets]                         # optional: validation targets per task (time to target,
    mnist1d-mlp = 0.62                # performance profiles); default: each task's own

A study may sample each method's configurations instead of running its grid: the top-level
keys ``search = "sample"``, ``sampler``, ``tuning_budgets``, ``search_seed``,
``search_batch``, the tables ``[tuning.<method>]`` and ``[space.<method>]``
(:mod:`demon_optim.study.search.space`).

:func:`expand` turns a :class:`Study`'s grid methods into :class:`TrialSpec` records (a
sampled method's trials are drawn while the study runs: :mod:`demon_optim.study.search`).
A trial spec is frozen and JSON-serialisable; its id is the sha256 of its canonical JSON
(task, method, hyperparameters, seed, epochs, batch size and :data:`PROTOCOL_VERSION`), so
the same trial in two studies is the same row of a store. Outside the id, a spec carries
where its data lives, the plugins that define its task or method, and what a report needs
to read its result (:class:`TrialAbout`), so neither a worker nor a report has to know the
study.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from demon_optim import _checks
from demon_optim.errors import ConfigError, invalid
from demon_optim.study.devices import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    check_device,
    check_precision,
)
from demon_optim.study.methods import Value, get_method, method_names
from demon_optim.study.methods.hyperparameters import jsonable
from demon_optim.study.plugins import Plugin, load_plugins
from demon_optim.study.presets import preset_names, preset_text
from demon_optim.study.search.space import SearchSettings, parse_searches
from demon_optim.study.tasks import get_task, task_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROTOCOL_VERSION = 1
"""Bump when a trial's meaning changes (training loop, splits, metric): old ids stop matching,
so a store never mixes results of two protocols under one id."""

KEYS = (
    "name",
    "description",
    "tasks",
    "methods",
    "seeds",
    "epochs",
    "batch_size",
    "token_budget",
    "data_dir",
    "plugins",
    "device",
    "precision",
    "channels_last",
    "batch_trials",
    "grid",
    "targets",
    "search",
    "sampler",
    "tuning_budgets",
    "search_seed",
    "search_batch",
    "tuning",
    "space",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # matched whole (re.fullmatch)
NAME_MAX_LENGTH = 100
"""A study name becomes file names (``<name>.sqlite``, ``<name>.md``, ``<name>-report/``):
ASCII letters and digits, then also ``.``, ``_`` and ``-``, at most this many characters (file
systems allow 255 bytes per name, and the store adds suffixes such as ``-journal``)."""

# Bounds a trial can finish within (an optimizer refuses more than 2**53 steps, where float64
# stops counting exactly). With at most MAX_EPOCHS epochs and fewer than 10**9 steps per epoch
# (no task here has 10**6: steps per epoch <= training examples or tokens / batch), a trial
# stays below 10**15 < 2**53 steps whatever the batch size or token budget.
MAX_EPOCHS = 10**6
MAX_BATCH_SIZE = 10**6  # above every training set here (a larger batch: one step per epoch)
MAX_TOKEN_BUDGET = 10**9  # tokens per epoch; above the corpus it is one pass (PTB: 930k)
MAX_SEED = 2**32 - 1  # every seeding function accepts it, and a store's INTEGER column holds it

BATCH_TRIALS_DEFAULT = "auto"
"""A study's ``batch_trials`` when it sets none: batch where it pays (study/batched/plan.py)."""
MAX_BATCH_TRIALS = 100_000  # models trained together at most (far above what memory allows)
BATCH_TRIALS_ALLOWED = (
    f"auto, off, or an integer from 1 to {MAX_BATCH_TRIALS:,} (the most trials trained "
    "together; 1 is off)"
)


def check_batch_trials(field: str, value: object) -> str | int:
    """A ``batch_trials`` value: ``"auto"``, ``"off"`` or an int >= 1; a ConfigError naming
    ``field`` and the allowed values otherwise."""
    if isinstance(value, str) and value in ("auto", "off"):
        return value
    return _checks.integer(field, value, 1, MAX_BATCH_TRIALS, BATCH_TRIALS_ALLOWED)


@dataclass(frozen=True)
class TrialAbout:
    """What a report needs to read a trial's result, fixed when the study is expanded.

    ``metric``, ``higher_is_better`` and ``target`` (the validation value that counts as
    reached: the study's ``[targets]`` entry, else the task's own; None: none) are the
    task's; ``family`` (the table and ranking the method joins), ``reference`` (beside the
    ranking) and ``schedule`` (the name the Top-k table compares across families) the
    method's. Kept in the store with each trial, so a report needs neither registry (nor the
    plugins that defined them).
    """

    metric: str
    higher_is_better: bool
    family: str
    reference: bool
    schedule: str
    target: float | None = None

    def to_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        if self.target is None:  # as stores written before targets existed have it
            del record["target"]
        return record

    @classmethod
    def of(cls, task: str, method: str, target: float | None = None) -> TrialAbout:
        """Read from the registries (the task and method must be registered); ``target``
        replaces the task's own when given."""
        task_entry, method_entry = get_task(task), get_method(method)
        return cls(
            metric=task_entry.metric,
            higher_is_better=task_entry.higher_is_better,
            family=method_entry.family,
            reference=method_entry.reference,
            schedule=method_entry.schedule,
            target=task_entry.target if target is None else target,
        )


@dataclass(frozen=True)
class TrialSpec:
    """One trial: everything that determines its result, plus how to run and read it.

    ``hyperparameters`` is a tuple of (name, value) pairs in the method's declaration order.
    Not part of the id: ``data_dir`` (the same data elsewhere is the same trial), ``plugins``
    (imported by a worker before it runs the trial), ``about`` and ``device`` (the same trial
    on a CPU and a GPU is one trial). ``precision`` and ``channels_last`` change the numbers:
    they are in the id when they are not the default.
    """

    task: str
    method: str
    hyperparameters: tuple[tuple[str, Value], ...]
    seed: int
    epochs: int
    batch_size: int
    protocol: int = PROTOCOL_VERSION
    data_dir: str | None = field(default=None, compare=False)
    token_budget: int | None = None  # tokens per epoch, language-model tasks only
    plugins: tuple[Plugin, ...] = field(default=(), compare=False)
    about: TrialAbout | None = field(default=None, compare=False)
    device: str = field(default=DEFAULT_DEVICE, compare=False)  # where: recorded, not hashed
    precision: str = DEFAULT_PRECISION  # fp32 | bf16 | fp16 (AMP)
    channels_last: bool = False  # image models in channels-last memory format

    @property
    def config(self) -> dict[str, Value]:
        """The hyperparameters as a dict."""
        return dict(self.hyperparameters)

    def identity(self) -> dict[str, Any]:
        """The JSON object hashed into the trial id (tuples become lists)."""
        return {
            "protocol": self.protocol,
            "task": self.task,
            "method": self.method,
            "hyperparameters": {k: jsonable(v) for k, v in self.hyperparameters},
            "seed": self.seed,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            # only when set, so the ids of trials without them stay as they were
            **({"token_budget": self.token_budget} if self.token_budget is not None else {}),
            **({"precision": self.precision} if self.precision != DEFAULT_PRECISION else {}),
            **({"channels_last": True} if self.channels_last else {}),
        }

    @functools.cached_property
    def trial_id(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`identity`."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The identity plus what travels outside it (a plugin's code stays out)."""
        return {
            **self.identity(),
            "data_dir": self.data_dir,
            "device": self.device,
            **({"plugins": [p.to_json() for p in self.plugins]} if self.plugins else {}),
            **({"about": self.about.to_json()} if self.about is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialSpec:
        """The spec :meth:`to_json` wrote, rebuilt as stored: no registry is consulted (a
        report reads stores whose plugins are gone), so its id is the stored one."""
        about = data.get("about")
        return cls(
            task=data["task"],
            method=data["method"],
            hyperparameters=tuple(
                (name, _value(value)) for name, value in data["hyperparameters"].items()
            ),
            seed=int(data["seed"]),
            epochs=int(data["epochs"]),
            batch_size=int(data["batch_size"]),
            protocol=int(data["protocol"]),
            data_dir=data.get("data_dir"),
            token_budget=data.get("token_budget"),
            plugins=tuple(Plugin.from_json(p) for p in data.get("plugins", ())),
            about=None if about is None else TrialAbout(**about),
            device=data.get("device", DEFAULT_DEVICE),
            precision=data.get("precision", DEFAULT_PRECISION),
            channels_last=bool(data.get("channels_last", False)),
        )

    def label(self) -> str:
        """Short human-readable description, e.g. for error summaries."""
        config = ", ".join(f"{k}={jsonable(v)}" for k, v in self.hyperparameters)
        budget = f", {self.token_budget} tokens/epoch" if self.token_budget else ""
        if self.precision != DEFAULT_PRECISION:
            budget += f", {self.precision}"
        if self.channels_last:
            budget += ", channels_last"
        return (
            f"{self.task} {self.method} [{config}] seed {self.seed}, {self.epochs} epochs{budget}"
        )


def _value(raw: object) -> Value:
    """A stored JSON value as a Value: lists as tuples, the rest as JSON gave it."""
    return tuple(raw) if isinstance(raw, list) else raw  # type: ignore[return-value]


@dataclass(frozen=True)
class Study:
    """A validated study. ``epochs`` empty: each task's default budget."""

    name: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: tuple[int, ...] = ()
    batch_size: int | None = None
    token_budget: int | None = None
    data_dir: str | None = None
    grids: Mapping[str, Mapping[str, tuple[Value, ...]]] = field(default_factory=dict)
    description: str = ""
    plugins: tuple[Plugin, ...] = ()
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    channels_last: bool = False
    targets: Mapping[str, float] = field(default_factory=dict)  # task -> validation target
    # method -> how its configurations are sampled; the methods not in it run their grid
    searches: Mapping[str, SearchSettings] = field(default_factory=dict)
    # how trials are executed (never part of a trial): "auto", "off" or the most at once
    batch_trials: str | int = BATCH_TRIALS_DEFAULT


# --- parsing ------------------------------------------------------------------------------


def load_study(source: str | pathlib.Path) -> Study:
    """A study from a preset name (``quick``, ``smoke``, ...) or a path to a TOML file."""
    text = str(source)
    if text in preset_names():
        return parse_study(_parse_toml(preset_text(text), f"preset {text!r}"), default_name=text)
    path = pathlib.Path(source)
    if not path.is_file():
        why = " (it is a directory)" if path.is_dir() else ""
        raise invalid(
            "study", text, [*preset_names(), f"or the path of an existing .toml study file{why}"]
        )
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is skipped, as the
        # CSV reader does; TOML itself forbids it
        raw_text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"study: cannot read {text!r}: {error}") from None
    data = _parse_toml(raw_text, str(path))
    return parse_study(data, default_name=path.stem, base_dir=path.parent)


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except ValueError as error:  # TOMLDecodeError, or an integer of over 4300 digits
        raise ConfigError(f"study: {where} is not valid TOML: {error}") from None


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute, ``~`` expanded and symbolic links resolved, never raising.

    Not ``Path.expanduser().resolve()``: those raise RuntimeError for an unknown user
    (``~nobody/x``) and a symbolic-link loop; such a path is then kept as it is and fails
    where it is used, with a message naming it.
    """
    return os.path.realpath(os.path.expanduser(path))


def _str_list(data: Mapping[str, Any], key: str, choices: list[str]) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None:
        raise ConfigError(f"{key}: missing; allowed: a list of names from {', '.join(choices)}")
    if not isinstance(raw, list) or not raw:
        raise invalid(key, raw, f"a non-empty list of names from {', '.join(choices)}")
    for i, name in enumerate(raw):
        if name not in choices:
            raise invalid(f"{key}[{i}]", name, choices)
    if len(set(raw)) != len(raw):
        raise invalid(key, raw, "lists without repeated names")
    return tuple(raw)


def _int_list(raw: object, key: str, minimum: int, maximum: int, allowed: str) -> tuple[int, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise invalid(key, raw, allowed)
    for i, value in enumerate(values):
        where = f"{key}[{i}]" if isinstance(raw, list) else key
        _checks.integer(where, value, minimum, maximum, allowed)
    if len(set(values)) != len(values):
        raise invalid(key, raw, "lists without repeated values")
    return tuple(values)


def parse_study(
    data: Mapping[str, Any], default_name: str = "study", base_dir: pathlib.Path | None = None
) -> Study:
    """Validate a parsed TOML document; every error names the field and the value."""
    if not isinstance(data, Mapping):
        raise invalid("study", data, "a TOML table")
    for key in data:
        if key not in KEYS:
            raise invalid("study", key, KEYS)

    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > NAME_MAX_LENGTH:
        raise invalid(
            "name" if "name" in data else "name (the study file's name, as no name is set)",
            name,
            "ASCII letters, digits, '.', '_' and '-', starting with a letter or digit, at most "
            f"{NAME_MAX_LENGTH} characters (it names the study's files)",
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise invalid("description", description, "a string")

    # first: the plugins' tasks and methods are named in tasks, methods and grid
    plugins = load_plugins(data.get("plugins", []), base_dir)
    tasks = _str_list(data, "tasks", task_names())
    methods = _str_list(data, "methods", method_names())
    if "seeds" not in data:
        raise ConfigError("seeds: missing; allowed: a list of non-negative integers, e.g. [0, 1]")
    if not isinstance(data["seeds"], list):
        raise invalid("seeds", data["seeds"], "a list of non-negative integers, e.g. [0, 1]")
    seeds = _int_list(
        data["seeds"], "seeds", 0, MAX_SEED, f"non-negative integers up to 2**32 - 1 ({MAX_SEED})"
    )
    epochs = ()
    if "epochs" in data:
        epochs = _int_list(
            data["epochs"],
            "epochs",
            1,
            MAX_EPOCHS,
            f"positive integers up to {MAX_EPOCHS:,} (or a list of them)",
        )
    batch_size = data.get("batch_size")
    if batch_size is not None:
        allowed = f"positive integers up to {MAX_BATCH_SIZE:,}"
        batch_size = _checks.integer("batch_size", batch_size, 1, MAX_BATCH_SIZE, allowed)
    token_budget = data.get("token_budget")
    if token_budget is not None:
        allowed = f"positive integers up to {MAX_TOKEN_BUDGET:,} (tokens per epoch)"
        token_budget = _checks.integer("token_budget", token_budget, 1, MAX_TOKEN_BUDGET, allowed)
        if not any(get_task(t).uses_token_budget for t in tasks):
            budgeted = [n for n in task_names() if get_task(n).uses_token_budget]
            raise invalid(
                "token_budget",
                token_budget,
                f"only with a language-model task ({', '.join(budgeted)})",
            )

    data_dir = data.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str) or not data_dir or "\0" in data_dir:
            raise invalid("data_dir", data_dir, "a path (a non-empty string without NUL)")
        path = pathlib.Path(os.path.expanduser(data_dir))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        data_dir = absolute_path(path)

    device = check_device("device", data.get("device", DEFAULT_DEVICE))
    precision = check_precision("precision", data.get("precision", DEFAULT_PRECISION))
    channels_last = _checks.flag("channels_last", data.get("channels_last", False))
    if channels_last and not any(get_task(t).image_model for t in tasks):
        images = [n for n in task_names() if get_task(n).image_model]
        raise invalid("channels_last", True, f"only with an image task ({', '.join(images)})")

    batch_trials = check_batch_trials("batch_trials", data.get("batch_trials", "auto"))
    grids = _parse_grids(data.get("grid", {}), methods)
    targets = parse_targets(data.get("targets", {}), {t: get_task(t).metric for t in tasks})
    searches = parse_searches(data, methods, grids)
    return Study(
        name=name,
        tasks=tasks,
        methods=methods,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        token_budget=token_budget,
        data_dir=data_dir,
        grids=grids,
        description=description,
        plugins=plugins,
        device=device,
        precision=precision,
        channels_last=channels_last,
        targets=targets,
        searches=searches,
        batch_trials=batch_trials,
    )


#: Metrics measured as fractions here (a target of 90 for 90 % would never be reached).
METRIC_RANGES = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "matthews": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
}


def parse_targets(
    raw: object,
    metrics: Mapping[str, str],
    field_name: str = "targets",
    whose: str = "the study's tasks",
) -> dict[str, float]:
    """``{task: validation target}`` from a ``[targets]`` table; ``metrics`` maps each task
    that may have one (``whose`` says which they are, for the error) to its metric's name.

    Each value is a finite number in the metric's units; accuracy and F1 are fractions
    (0.9, not 90) and correlations lie in [-1, 1] (:data:`METRIC_RANGES`). A ConfigError
    names the entry (``targets.mnist1d-cnn``) and what is allowed.
    """
    if not isinstance(raw, Mapping):
        raise invalid(
            field_name, raw, "a table of task = validation target, e.g. mnist1d-cnn = 0.9"
        )
    targets = {}
    for task_name, value in raw.items():
        if task_name not in metrics:
            raise invalid(field_name, task_name, [f"{t} ({whose})" for t in metrics])
        metric = metrics[task_name]
        low, high = METRIC_RANGES.get(metric, (-math.inf, math.inf))
        allowed = f"a finite number, the validation {metric} to reach"
        if math.isfinite(low):
            allowed += f", in [{low:g}, {high:g}]" + (" (0.9 for 90 %)" if low == 0 else "")
        # a study's targets.mnist1d-cnn; an option's --target mnist1d-cnn
        entry = f"{field_name}{' ' if field_name.startswith('-') else '.'}{task_name}"
        targets[task_name] = _checks.number(
            entry, value, allowed, lambda x, lo=low, hi=high: lo <= x <= hi
        )
    return targets


def _parse_grids(raw: object, methods: tuple[str, ...]) -> dict[str, dict[str, tuple[Value, ...]]]:
    if not isinstance(raw, Mapping):
        raise invalid("grid", raw, "a table of [grid.<method>] tables")
    grids = {}
    for method_name, overrides in raw.items():
        if method_name not in methods:
            raise invalid("grid", method_name, [f"{m} (the study's methods)" for m in methods])
        if not isinstance(overrides, Mapping):
            raise invalid(f"grid.{method_name}", overrides, "a table of hyperparameter = values")
        method = get_method(method_name)
        grids[method_name] = method.check_grid(overrides, f"grid.{method_name}")
    return grids


# --- expansion ----------------------------------------------------------------------------


def expand(study: Study) -> list[TrialSpec]:
    """Every trial of the study's grid methods, in a fixed order: task, budget, method,
    configuration, seed. Sampled methods (``study.searches``) are left out: their
    configurations are drawn as the study runs (:mod:`demon_optim.study.search`)."""
    specs: dict[str, TrialSpec] = {}
    for task_name, epochs in settings(study):
        for method_name in study.methods:
            if method_name in study.searches:
                continue
            method = get_method(method_name)
            for config in method.grid(study.grids.get(method_name)):
                for spec in trial_specs(study, task_name, epochs, method_name, config):
                    specs.setdefault(spec.trial_id, spec)
    return list(specs.values())


def settings(study: Study) -> list[tuple[str, int]]:
    """(task, epoch budget) of every setting of the study, in order."""
    return [
        (task_name, epochs)
        for task_name in study.tasks
        for epochs in study.epochs or (get_task(task_name).epochs,)
    ]


def trial_specs(
    study: Study, task_name: str, epochs: int, method_name: str, config: Mapping[str, Value]
) -> list[TrialSpec]:
    """The trials of one configuration of a method on one setting, one per seed."""
    task = get_task(task_name)
    about = TrialAbout.of(task_name, method_name, study.targets.get(task_name))
    return [
        TrialSpec(
            task=task_name,
            method=method_name,
            hyperparameters=tuple(config.items()),
            seed=seed,
            epochs=epochs,
            batch_size=study.batch_size or task.batch_size,
            data_dir=study.data_dir,
            token_budget=study.token_budget if task.uses_token_budget else None,
            plugins=study.plugins,
            about=about,
            device=study.device,
            precision=study.precision,
            channels_last=study.channels_last and task.image_model,
        )
        for seed in study.seeds
    ]
