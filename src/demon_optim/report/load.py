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
from dataclasses import dataclass
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.methods import Value, method_names
from demon_optim.study.spec import PROTOCOL_VERSION, TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import task_names


@dataclass(frozen=True)
class Trial:
    """One row of the store's ``trials`` table (JSON columns decoded, pairs as tuples)."""

    trial_id: str
    task: str
    method: str
    seed: int
    epochs: int
    batch_size: int
    hyperparameters: dict[str, Value]
    status: str  # done | diverged | failed
    val_metric: float | None
    test_metric: float | None
    history: tuple[dict[str, Any], ...]
    wall_time_s: float
    versions: dict[str, str]
    error: str | None
    started_at: str
    finished_at: str
    protocol: int = PROTOCOL_VERSION

    @property
    def lr(self) -> float | None:
        value = self.hyperparameters.get("lr")
        return value if isinstance(value, float) else None

    @property
    def momentum(self) -> float | None:
        """SGD momentum / Adam beta1 (``beta_init`` for a decay); None for OneCycle ranges."""
        value = self.hyperparameters.get("momentum")
        return value if isinstance(value, float) else None

    def spec(self) -> TrialSpec:
        """The trial spec, rebuilt without re-validating (the registry may have grown since)."""
        return TrialSpec(
            task=self.task,
            method=self.method,
            hyperparameters=tuple(self.hyperparameters.items()),
            seed=self.seed,
            epochs=self.epochs,
            batch_size=self.batch_size,
            protocol=self.protocol,
        )

    def row(self) -> dict[str, Any]:
        """The store row shape ``demon_optim.study.results.summarize`` reads, keyed to
        :meth:`spec`'s id (so selection never depends on how floats round-trip)."""
        return {
            "trial_id": self.spec().trial_id,
            "status": self.status,
            "val_metric": self.val_metric,
            "test_metric": self.test_metric,
        }


@dataclass(frozen=True)
class StoreData:
    """Everything a report needs from one store."""

    path: pathlib.Path
    meta: dict[str, str]
    trials: tuple[Trial, ...]


def _value(raw: object) -> Value:
    if isinstance(raw, list):
        return tuple(float(v) for v in raw)
    return float(raw)  # type: ignore[arg-type]


def _trial(row: Mapping[str, Any]) -> Trial:
    spec = row.get("spec") or {}
    return Trial(
        trial_id=row["trial_id"],
        task=row["task"],
        method=row["method"],
        seed=int(row["seed"]),
        epochs=int(row["epochs"]),
        batch_size=int(row["batch_size"]),
        hyperparameters={k: _value(v) for k, v in row["hyperparameters"].items()},
        status=row["status"],
        val_metric=row["val_metric"],
        test_metric=row["test_metric"],
        history=tuple(row["history"]),
        wall_time_s=float(row["wall_time_s"]),
        versions=dict(row["versions"]),
        error=row.get("error"),
        started_at=row.get("started_at") or "",
        finished_at=row.get("finished_at") or "",
        protocol=int(spec.get("protocol", PROTOCOL_VERSION)),
    )


def load_store(path: str | pathlib.Path, trial_ids: Iterable[str] | None = None) -> StoreData:
    """Read ``path`` (read-only); optionally only the rows whose ids are in ``trial_ids``.

    Raises ConfigError if it is not a results store, is empty, or holds tasks or methods
    that this version of demon-optim does not know (the report needs their metric direction
    and family).
    """
    path = pathlib.Path(path)
    with ResultStore(path, readonly=True) as store:
        rows = store.rows(trial_ids)
        meta = store.meta()
    trials = tuple(_trial(row) for row in rows)
    if not trials:
        raise ConfigError(
            f"store: '{path}' holds no trials; allowed: a store with results "
            "(run a study first: demon-optim run STUDY --store PATH)"
        )
    for kind, names, known in (
        ("task", {t.task for t in trials}, set(task_names())),
        ("method", {t.method for t in trials}, set(method_names())),
    ):
        unknown = sorted(names - known)
        if unknown:
            raise ConfigError(
                f"store: '{path}' has trials of {kind} {unknown[0]!r}, which this version of "
                f"demon-optim does not know; allowed: {', '.join(sorted(known))}"
            )
    return StoreData(path=path, meta=meta, trials=trials)
