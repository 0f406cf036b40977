"""Read a results store into plain records; never writes.

The report reads only the store (data flows one way, study -> trials -> store -> report:
``docs/architecture.md``).
The store is opened through :class:`~demon_optim.study.store.ResultStore` with
``readonly=True`` (an SQLite ``file:...?mode=ro`` URI), which also refuses a file that is not
a results store, without touching it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.methods import Value, method_names
from demon_optim.study.spec import TrialAbout, TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import task_names
from demon_optim.study.trial import Samples


@dataclass(frozen=True)
class Trial:
    """One row of the store's ``trials`` table: its spec as stored, and its result.

    The spec is rebuilt by :meth:`TrialSpec.from_json` from the row's ``spec`` column, the
    one path that needs no registry; ``about`` says how to read it (metric, direction,
    family, reference, schedule), as the store recorded it.
    """

    trial_spec: TrialSpec
    about: TrialAbout
    status: str  # done | diverged | failed
    val_metric: float | None
    test_metric: float | None
    history: tuple[dict[str, Any], ...]
    wall_time_s: float
    versions: dict[str, str]
    error: str | None
    started_at: str
    finished_at: str
    # every metric by where it was measured ("val", "test", "final"), as the store keeps it
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    samples: Samples | None = None  # images the trial produced (a generative task's)
    # None: run by this harness; "import:algoperf" / "import:deepobs": published results
    # imported into the store (demon_optim.study.imports), with the file they came from
    origin: str | None = None
    source: dict[str, Any] | None = None
    stored_id: str | None = None  # an imported row's id (not its spec's hash); None: run here
    # how it was trained: None alone; {"mode": "batched", "batch": id, "size": M} with the
    # M - 1 others of its batch (its clocks are the batch's divided by M)
    execution: dict[str, Any] | None = None

    @property
    def trial_id(self) -> str:
        return self.stored_id or self.trial_spec.trial_id

    @property
    def imported(self) -> bool:
        return self.origin is not None

    @property
    def task(self) -> str:
        return self.trial_spec.task

    @property
    def method(self) -> str:
        return self.trial_spec.method

    @property
    def seed(self) -> int:
        return self.trial_spec.seed

    @property
    def epochs(self) -> int:
        return self.trial_spec.epochs

    @property
    def batch_size(self) -> int:
        return self.trial_spec.batch_size

    @property
    def token_budget(self) -> int | None:
        return self.trial_spec.token_budget

    @property
    def hyperparameters(self) -> dict[str, Value]:
        return self.trial_spec.config

    @property
    def family(self) -> str:
        return self.about.family

    @property
    def lr(self) -> float | None:
        value = self.hyperparameters.get("lr")
        return (
            float(value) if isinstance(value, float | int) and not isinstance(value, bool) else None
        )

    @property
    def momentum(self) -> float | None:
        """SGD momentum / Adam beta1 (``beta_init`` for a decay); None for OneCycle ranges."""
        value = self.hyperparameters.get("momentum")
        if isinstance(value, float | int) and not isinstance(value, bool):
            return float(value)
        return None

    def spec(self) -> TrialSpec:
        return self.trial_spec

    def row(self) -> dict[str, Any]:
        """The store row shape ``demon_optim.study.results.summarize`` reads."""
        return {
            "trial_id": self.trial_id,
            "status": self.status,
            "val_metric": self.val_metric,
            "test_metric": self.test_metric,
        }


@dataclass(frozen=True)
class SearchDraw:
    """One configuration a search drew: its place in the sequence, its trials (one per
    seed) and what its sampler was told (``complete``, ``fail``; None: not yet)."""

    draw: int
    config: dict[str, Value]
    trial_ids: tuple[str, ...]
    state: str | None


@dataclass(frozen=True)
class SearchRecord:
    """A search as the store recorded it: a sampled method on one setting, its draws in the
    order the sampler asked them (:mod:`demon_optim.study.search`)."""

    search_id: str
    task: str
    method: str
    epochs: int
    batch_size: int
    token_budget: int | None
    sampler: str
    seed: int
    batch: int
    tuning_budgets: tuple[int, ...]
    draws: tuple[SearchDraw, ...]
    varies: tuple[str, ...] = ()  # the hyperparameters its space varies


@dataclass(frozen=True)
class StoreData:
    """Everything a report needs from one store: ``trials`` are the user's own (every
    view selects and ranks among them), ``imported`` the published results imported beside
    them, kept apart (:mod:`demon_optim.report.imported` shows them), ``searches`` the
    sampled methods' sequences of draws (:mod:`demon_optim.report.budgets` shows them)."""

    path: pathlib.Path
    meta: dict[str, str]
    trials: tuple[Trial, ...]
    imported: tuple[Trial, ...] = ()
    searches: tuple[SearchRecord, ...] = ()


def _trial(row: Mapping[str, Any], path: pathlib.Path) -> Trial:
    spec = TrialSpec.from_json(row["spec"])
    return Trial(
        trial_spec=spec,
        about=spec.about or _about_from_registries(spec, path),
        status=row["status"],
        val_metric=row["val_metric"],
        test_metric=row["test_metric"],
        history=tuple(row["history"]),
        wall_time_s=float(row["wall_time_s"]),
        versions=dict(row["versions"]),
        error=row.get("error"),
        started_at=row.get("started_at") or "",
        finished_at=row.get("finished_at") or "",
        metrics=dict(row.get("metrics") or {}),
        samples=_samples(row.get("samples"), path, spec.trial_id),
        origin=row.get("origin"),  # absent from a store before version 4: run here
        source=row.get("source"),
        # an imported row's id is hashed from its files, not from its spec
        stored_id=row["trial_id"] if row.get("origin") is not None else None,
        execution=row.get("execution"),  # absent from a store before version 5: alone
    )


def _samples(record: Any, path: pathlib.Path, trial_id: str) -> Samples | None:
    if record is None:
        return None
    try:
        return Samples.from_json(record)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"store: '{path}': trial {trial_id[:12]} has unreadable samples ({error}); "
            "allowed: the samples demon-optim writes"
        ) from None


def _about_from_registries(spec: TrialSpec, path: pathlib.Path) -> TrialAbout:
    """For a row written before the store kept ``about``: the built-in registries know it."""
    for kind, name, known in (
        ("task", spec.task, task_names()),
        ("method", spec.method, method_names()),
    ):
        if name not in known:
            raise ConfigError(
                f"store: '{path}' has trials of {kind} {name!r} written by an older "
                "demon-optim, which did not record its metric and family; allowed: stores "
                f"of known tasks and methods ({kind}s known: {', '.join(sorted(known))}), "
                "or load the plugin that defines it"
            )
    return TrialAbout.of(spec.task, spec.method)


def load_store(path: str | pathlib.Path, trial_ids: Iterable[str] | None = None) -> StoreData:
    """Read ``path`` (read-only); optionally only the rows whose ids are in ``trial_ids``.

    Raises ConfigError if it is not a results store or is empty. Every row says how it is
    read (``about``); only a row written before stores kept that needs the registries.
    Imported trials (``origin`` set) go to :attr:`StoreData.imported`, never to ``trials``.
    """
    path = pathlib.Path(path)
    wanted = None if trial_ids is None else set(trial_ids)
    with ResultStore(path, readonly=True) as store:
        rows = store.rows(wanted)
        meta = store.meta()
        searches = _searches(store.searches(), wanted)
    every = [_trial(row, path) for row in rows]
    trials = tuple(t for t in every if not t.imported)
    imported = tuple(t for t in every if t.imported)
    if not every:
        raise ConfigError(
            f"store: '{path}' holds no trials; allowed: a store with results "
            "(run a study first: demon-optim run STUDY --store PATH)"
        )
    return StoreData(
        path=path, meta=meta, trials=trials, imported=imported, searches=tuple(searches)
    )


def _searches(rows: Iterable[Mapping[str, Any]], wanted: set[str] | None) -> list[SearchRecord]:
    """The store's searches; with ``wanted`` (a report of some trials), the draws whose
    trials are all wanted (a study that ran fewer draws than the store holds: its own)."""
    out = []
    for row in rows:
        draws = tuple(
            SearchDraw(
                draw=int(d["draw"]),
                config={k: _value(v) for k, v in d["hyperparameters"].items()},
                trial_ids=tuple(d["trial_ids"]),
                state=d["state"],
            )
            for d in row["draws"]
            if wanted is None or set(d["trial_ids"]) <= wanted
        )
        if wanted is not None and not draws:
            continue
        definition = row["definition"]
        out.append(
            SearchRecord(
                search_id=row["search_id"],
                task=row["task"],
                method=row["method"],
                epochs=int(row["epochs"]),
                batch_size=int(row["batch_size"]),
                token_budget=definition.get("token_budget"),
                sampler=row["sampler"],
                seed=int(row["search_seed"]),
                batch=int(row["search_batch"]),
                tuning_budgets=tuple(int(k) for k in row["tuning_budgets"]),
                draws=draws,
                varies=tuple(
                    d["name"]
                    for d in definition.get("space", ())
                    if "kind" in d or len(d.get("choices", ())) > 1
                ),
            )
        )
    return out


def _value(raw: object) -> Value:
    return tuple(raw) if isinstance(raw, list) else raw  # type: ignore[return-value]
