"""The driver's search loop: ask configurations in fixed batches, record them, run their
trials, tell the results in draw order.

A **search** is one sampled method on one setting (task x epoch budget). Its sampler is
asked for ``search_batch`` configurations at a time; the batch is recorded in the store's
``search_draws`` table (one transaction) before any of its trials is dispatched; every
configuration runs with every seed of the study; once each of the batch's trials is final
(done or diverged), the batch is told to the sampler in draw order (the configuration's
mean validation metric over seeds, or a failure if a seed diverged), the tells are
recorded, and the next batch is asked, until ``max(tuning_budgets)`` configurations are
drawn. A batch with a failed trial waits: the next ``run`` runs that trial again and goes
on from there.

Why this order: the draws then depend only on the seed, the space and the values told,
never on which trial finished first, how many workers ran them or whether the driver was
killed. A resumed run (or a second driver of the store) rebuilds each sampler by replaying
the record, asking the recorded batches and telling the recorded values, checks that the
sampler draws what the store says it drew, and continues. Random and QMC draws do not
depend on the values told, so their default batch is the whole budget (one round); TPE's
do, so its batches wait for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.executors import Executor, RunReport, run_study
from demon_optim.study.methods import Value
from demon_optim.study.methods.hyperparameters import jsonable
from demon_optim.study.search.sampler import Sampling, optuna_version, require_optuna
from demon_optim.study.search.space import SearchSettings
from demon_optim.study.spec import Study, TrialSpec, settings, trial_specs
from demon_optim.study.store import COMPLETE, FAIL, FINAL_STATUSES, ResultStore
from demon_optim.study.tasks import get_task


@dataclass(frozen=True)
class Search:
    """One sampled method on one setting of a study."""

    study: Study = field(repr=False)
    task: str
    epochs: int
    method: str
    settings: SearchSettings

    @property
    def maximize(self) -> bool:
        return get_task(self.task).higher_is_better

    def specs(self, config: Mapping[str, Value]) -> list[TrialSpec]:
        """The trials of one drawn configuration, one per seed of the study."""
        return trial_specs(self.study, self.task, self.epochs, self.method, config)

    def identity(self) -> dict[str, Any]:
        """What the sequence of draws depends on: the setting as the trials' ids see it,
        the seeds (their mean is told), the sampler, its seed, the batch and the space."""
        # the setting's fields, as every trial of it has them
        setting = trial_specs(self.study, self.task, self.epochs, self.method, {})[0].identity()
        del setting["hyperparameters"], setting["seed"]
        return {**setting, "seeds": sorted(self.study.seeds), **self.settings.identity()}

    @property
    def search_id(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def label(self) -> str:
        return f"{self.method} on {self.task} ({self.epochs} epochs)"


def plan(study: Study) -> list[Search]:
    """Every search of a study: each sampled method on each setting, in the study's order."""
    return [
        Search(study, task, epochs, method, study.searches[method])
        for task, epochs in settings(study)
        for method in study.methods
        if method in study.searches
    ]


class _Progress:
    """One search during a run: its sampler, rebuilt from the record, and its draws."""

    def __init__(self, search: Search, store: ResultStore) -> None:
        self.search = search
        self.id = search.search_id
        self.sampling = Sampling(
            search.settings.space, search.settings.sampler, search.settings.seed, search.maximize
        )
        self.draws: list[dict[str, Any]] = []  # as recorded, in draw order
        self.told = 0  # draws told to the sampler
        recorded = store.search_draws(self.id)
        batches: dict[int, list[dict[str, Any]]] = {}
        for row in recorded:
            batches.setdefault(row["batch"], []).append(row)
        for number, rows in sorted(batches.items()):
            if self.told < len(self.draws):  # an untold batch can only be the last one
                raise self._inconsistent(f"batch {number} follows a batch that was not told")
            self._check(rows, self.sampling.ask(len(rows)))
            self.draws += rows
            if all(row["state"] is not None for row in rows):
                self._tell(rows)

    # -- the sequence ---------------------------------------------------------------------

    def _check(self, rows: Sequence[Mapping[str, Any]], params: Sequence[Mapping]) -> None:
        for row, drawn in zip(rows, params, strict=True):
            if row["params"] != drawn:
                raise self._inconsistent(
                    f"draw {row['draw']} is {row['params']} in the store, but this Optuna "
                    f"({optuna_version()}) draws {drawn}"
                )

    def _inconsistent(self, what: str) -> ConfigError:
        return ConfigError(
            f"search {self.search.label()} ({self.id[:12]}): {what}; allowed: the Optuna "
            "version that drew the search (see the store's searches.versions), or another "
            "store (--store)"
        )

    def _tell(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.sampling.tell([row["value"] if row["state"] == COMPLETE else None for row in rows])
        self.told += len(rows)

    def _batch(self, start: int) -> list[dict[str, Any]]:
        number = self.draws[start]["batch"]
        return [row for row in self.draws[start:] if row["batch"] == number]

    # -- one step of the loop ---------------------------------------------------------------

    def advance(self, store: ResultStore) -> list[TrialSpec]:
        """Tell every batch whose trials are all final, ask the next ones; returns the specs
        of the draws (within the budget) whose batch still waits for its trials."""
        budget = self.search.settings.draws
        while True:
            if self.told < len(self.draws):
                rows = self._batch(self.told)
                outcomes = _outcomes(store, rows)
                if outcomes is None:  # some trial not final yet (pending, running, failed)
                    return [s for row in rows if row["draw"] < budget for s in self._specs(row)]
                store.record_tells(
                    self.id,
                    [(row["draw"], *outcome) for row, outcome in zip(rows, outcomes, strict=True)],
                )
                recorded = store.search_draws(self.id)[rows[0]["draw"] : rows[-1]["draw"] + 1]
                self.draws[self.told : self.told + len(rows)] = recorded
                self._tell(recorded)  # the record, not this process's view, is told
                continue
            if len(self.draws) >= budget:
                return []
            self._ask(store, min(self.search.settings.batch, budget - len(self.draws)))

    def _ask(self, store: ResultStore, count: int) -> None:
        start = len(self.draws)
        number = self.draws[-1]["batch"] + 1 if self.draws else 0
        params = self.sampling.ask(count)
        rows = []
        for offset, drawn in enumerate(params):
            config = self.search.settings.space.config(drawn)
            rows.append(
                {
                    "draw": start + offset,
                    "batch": number,
                    "params": drawn,
                    "hyperparameters": {k: jsonable(v) for k, v in config.items()},
                    "trial_ids": [s.trial_id for s in self.search.specs(config)],
                }
            )
        store.record_draws(self.id, rows)
        recorded = store.search_draws(self.id)[start : start + count]
        self._check(recorded, params)  # another driver of the store drew the same
        self.draws += recorded

    def _specs(self, row: Mapping[str, Any]) -> list[TrialSpec]:
        config = {k: _value(v) for k, v in row["hyperparameters"].items()}
        specs = self.search.specs(config)
        if [s.trial_id for s in specs] != row["trial_ids"]:
            raise self._inconsistent(f"draw {row['draw']}'s trials are not the recorded ones")
        return specs

    def specs(self) -> list[TrialSpec]:
        budget = self.search.settings.draws
        return [s for row in self.draws if row["draw"] < budget for s in self._specs(row)]


def _value(raw: object) -> Value:
    return tuple(raw) if isinstance(raw, list) else raw  # type: ignore[return-value]


def _outcomes(
    store: ResultStore, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, float | None]] | None:
    """Per draw, what its sampler is told: (COMPLETE, mean validation metric over seeds) or
    (FAIL, None) if a seed diverged; None while a trial is not final."""
    ids = [i for row in rows for i in row["trial_ids"]]
    found = store.outcomes(ids)
    if any(found.get(i, ("missing", None))[0] not in FINAL_STATUSES for i in ids):
        return None
    out: list[tuple[str, float | None]] = []
    for row in rows:
        results = [found[i] for i in row["trial_ids"]]
        if all(status == "done" for status, _ in results):
            out.append((COMPLETE, statistics.fmean(float(v) for _, v in results)))  # type: ignore[arg-type]
        else:
            out.append((FAIL, None))
    return out


class Coordinator:
    """The searches of one run: rebuilt from the store when created (:class:`_Progress`),
    advanced by :meth:`advance` between rounds of trials."""

    def __init__(self, searches: Sequence[Search], store: ResultStore) -> None:
        self.store = store
        self.searches = list(searches)
        if self.searches:
            require_optuna()
        version = optuna_version() if self.searches else ""
        self._running = []
        for search in self.searches:
            store.record_search(_record(search, version))
            self._running.append(_Progress(search, store))

    def advance(self) -> list[TrialSpec]:
        """Tell what finished, ask what is next; the trials the searches wait for now."""
        return [spec for running in self._running for spec in running.advance(self.store)]

    def specs(self) -> list[TrialSpec]:
        """Every trial drawn so far (within the budgets), search by search, in draw order."""
        return [spec for running in self._running for spec in running.specs()]

    def planned(self) -> int:
        """Trials the searches run once complete (repeated draws counted once each)."""
        return sum(s.settings.draws * len(s.study.seeds) for s in self.searches)

    def describe(self) -> str:
        """The searches in words, for the run's header line."""
        groups: dict[tuple[str, int], int] = {}
        for search in self.searches:
            key = (search.settings.sampler, search.settings.draws)
            groups[key] = groups.get(key, 0) + 1
        return ", ".join(
            f"{count} search{'es' if count > 1 else ''} of {draws} configurations by {sampler}"
            for (sampler, draws), count in groups.items()
        )


def _record(search: Search, version: str) -> dict[str, Any]:
    return {
        "search_id": search.search_id,
        "task": search.task,
        "method": search.method,
        "epochs": search.epochs,
        "batch_size": search.identity()["batch_size"],
        "sampler": search.settings.sampler,
        "search_seed": search.settings.seed,
        "search_batch": search.settings.batch,
        "definition": search.identity(),
        "tuning_budgets": list(search.settings.tuning_budgets),
        "versions": {"optuna": version},
    }


def run_with_searches(
    specs: Sequence[TrialSpec],
    coordinator: Coordinator,
    store: ResultStore,
    executor: Executor,
    *,
    progress: bool = False,
    batch_trials: str | int = "off",
    echo: Callable[[str], None] | None = None,
) -> RunReport:
    """Run the grid's ``specs`` and every search to its budget, in rounds of
    :func:`~demon_optim.study.executors.run_study`: the first round runs the grid and each
    search's waiting batch; each later one the batches asked after the round before. A
    trial that failed in this run is not run again in it (the next run does that)."""
    submitted: set[str] = set()
    total = RunReport(total=0, skipped=0)
    round_specs = [*specs, *coordinator.advance()]
    kept = getattr(executor, "kept", None)  # local workers live through every round
    with kept() if kept is not None else contextlib.nullcontext():
        while True:
            todo = list(_unique(s for s in round_specs if s.trial_id not in submitted))
            if not todo:
                break
            submitted.update(s.trial_id for s in todo)
            report = run_study(
                todo, store, executor, progress=progress, batch_trials=batch_trials, echo=echo
            )
            _add(total, report)
            if report.interrupted:
                break
            round_specs = coordinator.advance()
    total.total = len({s.trial_id for s in [*specs, *coordinator.specs()]})
    return total


def _unique(specs: Iterator[TrialSpec]) -> Iterator[TrialSpec]:
    seen: set[str] = set()
    for spec in specs:
        if spec.trial_id not in seen:
            seen.add(spec.trial_id)
            yield spec


def _add(total: RunReport, report: RunReport) -> None:
    total.skipped += report.skipped
    total.written += report.written
    for status, count in report.counts.items():
        total.counts[status] = total.counts.get(status, 0) + count
    total.failures += report.failures
    total.interrupted = total.interrupted or report.interrupted
    total.wall_time_s += report.wall_time_s
    total.elsewhere += report.elsewhere
