"""Run a study end to end: the one path behind ``demon-optim run`` and :func:`run`.

Load and validate the study (its plugins first), check its data, expand it into trials,
run those not yet final in the store (and its searches, the sampled methods, to their
budgets: :mod:`demon_optim.study.search.coordinator`), then write the results table beside the store
(``<study>.md``) and the report (``<study>-report/``). Failed trials do not raise: they are
in :attr:`StudyRun.failed` (and run again next time). Once the results are in the store, a
table or report that cannot be written is a note and an exit code, never an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from demon_optim.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED_TRIALS,
    ConfigError,
    EnvironmentFailure,
    describe_os_error,
    invalid,
    one_line,
)
from demon_optim.study import devices
from demon_optim.study.executors import Executor, RunReport, run_study
from demon_optim.study.results import TaskTable, summarize, to_markdown
from demon_optim.study.spec import (
    Study,
    TrialSpec,
    absolute_path,
    check_batch_trials,
    expand,
    load_study,
    parse_study,
)
from demon_optim.study.store import ResultStore

Echo = Callable[[str], None]


@dataclass
class StudyRun:
    """What :func:`run` did and found.

    ``tables``: one :class:`~demon_optim.study.results.TaskTable` per task and budget (its
    ``rows`` ranked, best first); ``failed``: the store rows of failed trials (``trial_id``,
    ``task``, ``method``, ``hyperparameters``, ``seed``, ``error``, ``traceback``, ...);
    ``store``, ``markdown``, ``report``: the files (None where one was not written, see
    ``notes``); ``interrupted``: stopped by Ctrl-C (results so far are in the store).
    """

    study: Study
    specs: list[TrialSpec]
    store: pathlib.Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: list[TaskTable] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    markdown: pathlib.Path | None = None
    report: pathlib.Path | None = None
    interrupted: bool = False
    progress: RunReport | None = None
    notes: list[str] = field(default_factory=list)  # what went wrong after the run, one line each
    exit_code: int = 0  # as ``demon-optim run`` exits (0, 1, 3; 130 is the CLI's)

    def table(self, task: str) -> TaskTable:
        """The results table of ``task`` (a study with one budget and batch size for it)."""
        found = [t for t in self.tables if t.task == task]
        if len(found) != 1:
            allowed = sorted({t.task for t in self.tables})
            if found:
                raise invalid("task", task, "a task with one table; use .tables for budgets")
            raise invalid("task", task, allowed)
        return found[0]

    def counts(self) -> dict[str, int]:
        statuses = [row["status"] for row in self.rows]
        return {s: statuses.count(s) for s in ("done", "diverged", "failed")}


def resolve_study(study: str | os.PathLike[str] | Mapping[str, Any] | Study) -> Study:
    """A Study from a preset name, a TOML path, or a dict with a study file's keys (paths in
    a dict, plugins and data_dir, are relative to the current folder)."""
    if isinstance(study, Study):
        return study
    if isinstance(study, Mapping):
        return parse_study(study, default_name="study", base_dir=pathlib.Path.cwd())
    if isinstance(study, str | os.PathLike):
        return load_study(study)
    raise invalid("study", study, "a preset name, the path of a .toml study file, or a dict")


def make_executor(
    executor: str | Executor,
    workers: int | None,
    address: str | None,
    *,
    device: str = "cpu",
    workers_per_gpu: int = 1,
    gpus_per_trial: float = 0,
) -> Executor:
    """``"local"`` (worker processes here: one per GPU the study's device asks for, or per
    core), ``"ray"`` (trials as Ray tasks, ``gpus_per_trial`` each) or an executor object."""
    if not isinstance(executor, str):
        if address is not None:
            raise ConfigError("address: only with executor 'ray'")
        return executor
    if executor == "ray":
        from demon_optim.study.executors.ray import RayExecutor

        return RayExecutor(address=address, workers=workers, num_gpus_per_trial=gpus_per_trial)
    if executor != "local":
        raise invalid("executor", executor, ["local", "ray", "or an Executor object"])
    if address is not None:
        raise ConfigError("--address: only with --executor ray")
    if gpus_per_trial:
        raise ConfigError("--gpus-per-trial: only with --executor ray (locally: --workers-per-gpu)")
    from demon_optim.study.executors import LocalExecutor

    return LocalExecutor(
        workers, gpus=devices.cuda_indices(device), workers_per_gpu=workers_per_gpu
    )


def _where(study: Study, executor: Executor) -> str:
    """Where the trials run, for the header line."""
    gpus = getattr(executor, "gpus", None)
    if gpus:  # local workers, each pinned to one GPU
        names = ", ".join(f"cuda:{i}" for i in gpus)
        return f"GPU {names} ({getattr(executor, 'workers_per_gpu', 1)} worker(s) per GPU)"
    if gpus is None:  # Ray or another executor: each worker resolves the study's device
        return f"device {study.device} (as each worker resolves it)"
    return f"device {devices.resolve(study.device)}"


def check_data(study: Study) -> None:
    """Stop before any training if a task's data is missing (``Task.check_data``: one line
    saying how to get it)."""
    from demon_optim.study.tasks import get_task

    for name in study.tasks:
        get_task(name).check_data(study.data_dir)


def check_methods(study: Study) -> None:
    """Stop before any training if a method's optional package is missing (one line saying
    how to install it)."""
    from demon_optim.study.methods import get_method

    for name in study.methods:
        get_method(name).check_installed()


def check_search(study: Study) -> None:
    """Stop before any training if the study samples configurations and Optuna is missing
    (one line saying how to install it)."""
    if study.searches:
        from demon_optim.study.search.sampler import require_optuna

        require_optuna()


def run(
    study: str | os.PathLike[str] | Mapping[str, Any] | Study,
    *,
    store: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    executor: str | Executor = "local",
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    address: str | None = None,
    echo: Echo | None = None,
    device: str | None = None,
    workers_per_gpu: int = 1,
    gpus_per_trial: float = 0,
    batch_trials: str | int | None = None,
) -> StudyRun:
    """Run a study as ``demon-optim run`` does and return its results (:class:`StudyRun`).

    ``study``: a preset name, the path of a TOML study file, or a dict with the same keys.
    ``store``: the results store (default ``runs/<study name>.sqlite``); finished trials in
    it are skipped, so calling this again resumes. ``workers``: trials at once (default: one
    per core). ``executor``: ``"local"``, ``"ray"`` (``address``: the cluster) or an
    executor object. ``data_dir``, ``device`` and ``batch_trials`` (``"auto"``, ``"off"``
    or the most trials trained together, docs/batched-trials.md) override the study's;
    ``workers_per_gpu`` (local) and ``gpus_per_trial`` (Ray) share GPUs between trials.
    ``echo`` receives what
    the command prints on stderr (default: nothing is printed; a changed plugin is a
    warning).
    Raises ConfigError for a bad study or a missing data set (before any training) and
    EnvironmentFailure when the store cannot be written; failed trials do not raise.
    """
    say = echo or (lambda text: None)
    spec = resolve_study(study)
    if data_dir is not None:
        spec = dataclasses.replace(spec, data_dir=absolute_path(data_dir))
    if device is not None:
        spec = dataclasses.replace(spec, device=devices.check_device("--device", device))
    if batch_trials is not None:
        batch_trials = check_batch_trials("--batch-trials", batch_trials)
        spec = dataclasses.replace(spec, batch_trials=batch_trials)
    if executor == "local":  # a Ray cluster's workers have devices the driver may not
        devices.require(spec.device, "--device" if device is not None else "device")
    check_search(spec)  # Optuna, for a study that samples configurations
    check_data(spec)  # a missing data set stops the study here, before any training
    check_methods(spec)  # so does a method's missing package
    specs = expand(spec)
    store_path = (
        pathlib.Path(store) if store is not None else pathlib.Path("runs") / f"{spec.name}.sqlite"
    )
    runner = make_executor(
        executor,
        workers,
        address,
        device=spec.device,
        workers_per_gpu=workers_per_gpu,
        gpus_per_trial=gpus_per_trial,
    )
    result = StudyRun(study=spec, specs=specs, store=store_path)
    with ResultStore(store_path) as results:
        changed = _changed_plugins(spec, specs, results)
        if changed:
            if echo is None:
                warnings.warn(changed, stacklevel=2)
            say(changed)
        coordinator = None
        if spec.searches:
            from demon_optim.study.search.coordinator import Coordinator, plan

            coordinator = Coordinator(plan(spec), results)  # rebuilt from what is recorded
        known = _unique([*specs, *(coordinator.specs() if coordinator else [])])
        pending = {s.trial_id for s in results.pending(known)}
        elsewhere = len(pending & results.held_elsewhere())
        shared = (
            f" ({elsewhere} of them claimed by another driver of this store: this run takes "
            "the rest, then waits for those or takes them over if their lease expires)"
            if elsewhere
            else ""
        )
        if coordinator is None:
            planned, running = f"{len(specs)} trials", f"running {len(pending)}"
        else:
            total = len(specs) + coordinator.planned()
            planned = (
                f"{total} trials ({len(specs)} of grids; {coordinator.describe()}, each with "
                f"{len(spec.seeds)} seed(s))"
            )
            running = f"running up to {total - (len(known) - len(pending))}"
        say(
            f"study {spec.name}: {planned}, {len(known) - len(pending)} already in "
            f"{store_path}; {running} on {runner.workers} worker(s), "
            f"{_where(spec, runner)}{shared}"
        )
        if coordinator is None:
            result.progress = run_study(
                specs, results, runner, progress=progress, batch_trials=spec.batch_trials, echo=say
            )
        else:
            from demon_optim.study.search.coordinator import run_with_searches

            result.progress = run_with_searches(
                specs,
                coordinator,
                results,
                runner,
                progress=progress,
                batch_trials=spec.batch_trials,
                echo=say,
            )
            result.specs = specs = _unique([*specs, *coordinator.specs()])
        result.rows = results.rows(s.trial_id for s in specs)
    result.failed = [row for row in result.rows if row["status"] == "failed"]
    if result.progress.interrupted:
        result.interrupted = True
        return result

    # The results are safe in the store from here on: the table file and the report are
    # extras whose failures are one line each and the exit code, never a traceback.
    result.tables = summarize(specs, result.rows)
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items())
    code, note = _write_table(
        store_path.parent / f"{spec.name}.md",
        store_path,
        spec.name,
        f"# Study {spec.name}\n\n"
        f"{len(specs)} trials ({counts}); store `{store_path}`. Selection: per method, the "
        "configuration with the best mean validation metric over seeds; reported: its test "
        "metric, mean ± sample std over seeds (the mean alone with one seed).\n\n"
        + to_markdown(result.tables),
    )
    if code == 0 and note.startswith("Table written"):
        result.markdown = store_path.parent / f"{spec.name}.md"
    result.notes.append(note)
    report_code, report_note, result.report = _write_report(
        store_path, spec.name, [s.trial_id for s in specs], spec.targets
    )
    result.notes.append(report_note)
    result.exit_code = max(code, report_code, EXIT_FAILED_TRIALS if result.failed else 0)
    return result


def _unique(specs: Sequence[TrialSpec]) -> list[TrialSpec]:
    """``specs`` without repeated trial ids (two searches may draw the same trial)."""
    first: dict[str, TrialSpec] = {}
    for spec in specs:
        first.setdefault(spec.trial_id, spec)
    return list(first.values())


def _changed_plugins(study: Study, specs: Sequence[TrialSpec], store: ResultStore) -> str | None:
    """One warning if stored trials of this study ran with another version of a plugin."""
    if not study.plugins:
        return None
    now = {p.path or p.name: p.sha256 for p in study.plugins}
    changed: dict[str, int] = {}
    for row in store.rows(s.trial_id for s in specs):
        for stored in row["spec"].get("plugins", ()):
            where = stored.get("path") or stored.get("name")
            if where in now and stored.get("sha256") != now[where]:
                changed[where] = changed.get(where, 0) + 1
    if not changed:
        return None
    which = "; ".join(f"{path} ({n} stored trials)" for path, n in changed.items())
    return (
        f"warning: plugin changed since stored trials of this study ran: {which}. Their "
        "results are kept (a plugin's code is not part of a trial id); to run them again, "
        "use another store"
    )


def _write_table(
    path: pathlib.Path, store_path: pathlib.Path, name: str, text: str
) -> tuple[int, str]:
    """Write the run's Markdown table beside the store: (exit code, what happened).

    It replaces only a previous table of this study (first line ``# Study <name>``), never
    the store (``--store runs/x.md`` would otherwise be overwritten by the table of study x).
    """
    from demon_optim.study.outputs import check_target, first_line, write_text

    try:
        target = check_target(
            path,
            kind=f"a table of study {name} (its first line is not '# Study {name}')",
            recognise=lambda real: first_line(real) == f"# Study {name}",
            protected=[store_path],
            field=None,
            how="move it away, or give the store another folder with --store",
            how_protected="the table is <study>.md beside the store; give the store another "
            "name with --store",
        )
        write_text(target, text, shown=path)
    except ConfigError as error:
        return 0, f"No table file: {one_line(str(error))}"
    except OSError as error:
        return EXIT_ENVIRONMENT, (
            f"No table file: {describe_os_error(error)} (the results are safe in {store_path})"
        )
    return 0, f"Table written to {path}"


def _write_report(
    store_path: pathlib.Path,
    name: str,
    trial_ids: list[str],
    targets: Mapping[str, float] | None = None,
) -> tuple[int, str, pathlib.Path | None]:
    """Build the study's report beside its store: (exit code, what happened, index.html).

    ``targets``: the study's ``[targets]``, which its report uses whatever target a trial
    shared with another study recorded.

    The results are already in the store, so nothing here raises: a missing matplotlib or a
    refusal (ConfigError) is one line and 0; an operating-system error (a full disk, a
    read-only folder) is one line and EXIT_ENVIRONMENT.
    """
    out = store_path.parent / f"{name}-report"
    try:
        from demon_optim.report import build_report

        with writing_report(out):
            index = build_report(store_path, out, trial_ids=trial_ids, targets=targets)
    except ImportError as error:  # matplotlib is in the [study] extra
        return 0, f"No report: {error} (pip install 'demon-optim[study]')", None
    except ConfigError as error:  # e.g. the folder holds a user's files: never replaced
        return (
            0,
            f"No report: {one_line(str(error))}. To write it: demon-optim report --store "
            f"{store_path} --out DIR [--force]",
            None,
        )
    except OSError as error:
        return (
            EXIT_ENVIRONMENT,
            f"No report: {describe_os_error(error)} (the results are safe in {store_path}; "
            f"write it later with: demon-optim report --store {store_path} --out DIR)",
            None,
        )
    note = f"Report: {index}  (open it in a browser; tables also in {out / 'report.md'})"
    return 0, note, pathlib.Path(index)


@contextlib.contextmanager
def writing_report(out: pathlib.Path) -> Iterator[None]:
    """Name the report's folder in an operating-system error that names no file."""
    try:
        yield
    except EnvironmentFailure:
        raise
    except OSError as error:
        if error.filename is not None:
            raise
        from demon_optim.study.outputs import environment_failure

        raise environment_failure(error, f"write the report into '{out}'") from None
