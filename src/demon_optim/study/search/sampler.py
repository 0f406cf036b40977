"""Optuna's samplers behind one ask/tell interface, in the driver's process only.

Each search gets its own in-memory Optuna study: the harness's SQLite store, not Optuna's
storage, is the record of trials and draws (an Optuna storage shared between processes lets
parallel workers ask in an order that depends on timing; here one coordinator asks every
configuration and tells the results in draw order). The samplers, each seeded with the
search's ``search_seed``:

* ``random``: ``RandomSampler``, independent uniform (log-uniform) draws;
* ``qmc``: ``QMCSampler``, a scrambled Sobol sequence (Optuna draws the first point of a
  search with its independent sampler);
* ``tpe``: ``TPESampler`` at Optuna's defaults (its first 10 draws are independent; later
  ones model the results told so far).

Optuna is optional (the ``tuning`` extra); :func:`require_optuna` names the install command.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from demon_optim.errors import ConfigError
from demon_optim.study.methods.hyperparameters import jsonable
from demon_optim.study.search.space import Space

INSTALL = 'pip install "demon-optim[tuning]"'
MINIMUM_VERSION = (5, 0)


def require_optuna(field: str = "search") -> ModuleType:
    """The ``optuna`` module; a one-line ConfigError with the install command when it is
    missing or older than 5.0."""
    try:
        import optuna
    except ModuleNotFoundError as error:
        if error.name != "optuna":
            raise  # installed but broken: its own error says more
        raise ConfigError(
            f"{field}: sampling configurations needs the package optuna (>= 5.0), which is "
            f"not installed: {INSTALL}"
        ) from None
    version = tuple(int(p) for p in optuna.__version__.split(".")[:2] if p.isdigit())
    if version < MINIMUM_VERSION:
        raise ConfigError(
            f"{field}: sampling configurations needs optuna >= 5.0, found {optuna.__version__}: "
            f"{INSTALL} --upgrade"
        )
    return optuna


def optuna_version() -> str:
    return str(require_optuna().__version__)


@contextlib.contextmanager
def _quiet(optuna: ModuleType) -> Iterator[None]:
    """Optuna's per-trial INFO lines and its experimental-feature warnings, silenced for our
    calls (QMCSampler is "experimental" in Optuna 5); its logging level restored after."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


class Sampling:
    """One search's sampler: :meth:`ask` a batch of draws, then :meth:`tell` their outcomes
    in the same order, batch after batch.

    The draws depend only on the seed, the space and the outcomes told before them, so
    asking the same batches and telling the same outcomes again (a resumed study replaying
    its record) gives the same draws.
    """

    def __init__(self, space: Space, sampler: str, seed: int, maximize: bool) -> None:
        self.optuna = optuna = require_optuna()
        self.space = space
        self.distributions = _distributions(optuna, space)
        with _quiet(optuna):
            samplers = optuna.samplers
            if sampler == "random":
                chosen = samplers.RandomSampler(seed=seed)
            elif sampler == "qmc":
                chosen = samplers.QMCSampler(
                    seed=seed,
                    scramble=True,  # unscrambled Sobol starts at the corner of the space
                    warn_independent_sampling=False,
                    warn_asynchronous_seeding=False,
                )
            elif sampler == "tpe":
                chosen = samplers.TPESampler(seed=seed)
            else:
                raise ValueError(f"sampler: got {sampler!r}")
            self.study = optuna.create_study(
                sampler=chosen, direction="maximize" if maximize else "minimize"
            )
        self._asked: list[Any] = []

    def ask(self, count: int) -> list[dict[str, Any]]:
        """Draw ``count`` configurations (the previous batch must be told): each Optuna's
        ``params``, one entry per dimension that varies (choices as JSON text)."""
        if self._asked:
            raise RuntimeError("ask: the previous batch has not been told")
        with _quiet(self.optuna):
            self._asked = [self.study.ask(self.distributions) for _ in range(count)]
        return [dict(trial.params) for trial in self._asked]

    def tell(self, values: Sequence[float | None]) -> None:
        """Tell the outcomes of the last batch, in its order: a value (the mean validation
        metric over seeds), or None for a configuration that failed (diverged)."""
        if len(values) != len(self._asked):
            raise RuntimeError(f"tell: {len(values)} outcomes for {len(self._asked)} draws")
        failed = self.optuna.trial.TrialState.FAIL
        with _quiet(self.optuna):
            for trial, value in zip(self._asked, values, strict=True):
                if value is None:
                    self.study.tell(trial, state=failed)
                else:
                    self.study.tell(trial, float(value))
        self._asked = []


def _distributions(optuna: ModuleType, space: Space) -> dict[str, Any]:
    """Optuna distributions of the dimensions that vary: ranges as Float/IntDistribution,
    choices as a CategoricalDistribution of their JSON texts (tuples are not Optuna values)."""
    found: dict[str, Any] = {}
    d = optuna.distributions
    for dim in space.dimensions:
        if not dim.varies:
            continue
        if dim.kind == "choice":
            texts = [json.dumps(jsonable(c)) for c in dim.choices]
            found[dim.name] = d.CategoricalDistribution(texts)
        elif dim.kind == "int":
            found[dim.name] = d.IntDistribution(
                int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1)
            )
        else:
            found[dim.name] = d.FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    return found
