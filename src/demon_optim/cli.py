"""The ``demon-optim`` command: parses arguments, calls the library, prints.

Exit codes (every error is one line on stderr, never a traceback):

* 0 success;
* 1 some trials failed (they are re-run next time);
* 2 a usage or configuration error: a bad value, a file that is not what it should be, an
  output that would replace a file it did not write (``--force`` to allow it);
* 3 the environment failed: disk full, permissions, a read-only file system, a lock held
  too long; the line names the path and the cause;
* 130 interrupted by Ctrl-C.

When ``run`` meets several, the highest of 3, 2 and 1 is its exit code (and every message is
printed). Only ConfigError and OSError (EnvironmentFailure included) are mapped: any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import sys
from collections.abc import Iterator, Sequence

from demon_optim.errors import ConfigError, EnvironmentFailure

EXIT_FAILED_TRIALS = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130


def _path(text: str) -> pathlib.Path:
    """An argparse type: a path, not empty (``''`` would silently mean this folder)."""
    if not text:
        raise argparse.ArgumentTypeError("got an empty path")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"got {text!r}, a path with a NUL character")
    return pathlib.Path(text)


def _parser() -> argparse.ArgumentParser:
    from demon_optim.study.presets import preset_names

    parser = argparse.ArgumentParser(
        prog="demon-optim",
        description="Demon momentum decay: run and export optimizer studies.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a study (resumes: finished trials in the store are skipped)",
        description="Run a study and print its results table per task.",
    )
    run.add_argument(
        "study",
        metavar="PRESET|STUDY.toml",
        help=f"a preset ({', '.join(preset_names())}) or a study file (see docs/study.md)",
    )
    run.add_argument("--store", type=_path, help="results store (default: runs/<study>.sqlite)")
    run.add_argument(
        "--workers",
        type=int,
        help="trials run at once (default: one per CPU core; with --executor ray: one per "
        "CPU of the cluster)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where trials run: worker processes on this machine (local, default) or tasks "
        "on a Ray cluster (ray; pip install 'demon-optim[ray]'; see docs/cluster.md)",
    )
    run.add_argument(
        "--address",
        metavar="ADDR",
        help="with --executor ray: the Ray cluster to use ('auto': the one `ray start` "
        "started here; host:port; ray://host:10001); default: a local cluster started for "
        "this run",
    )
    run.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    run.add_argument(
        "--data-dir",
        type=_path,
        help="where data sets live (overrides the study's data_dir; default: $DEMON_OPTIM_DATA, "
        "then where the registry packages install them)",
    )

    data = commands.add_parser(
        "data",
        help="list every data set: found or not, where, checksum status, how to get it",
        description="Never downloads: it looks, verifies checksums and says how to get what is "
        "missing.",
    )
    data.add_argument("--data-dir", type=_path, help="also look here (first)")
    data.add_argument(
        "--no-verify", action="store_true", help="skip reading files to check their checksums"
    )

    export = commands.add_parser(
        "export",
        help="write a store's trials as CSV",
        description="Write one CSV row per trial. The file is replaced whole or not at all; "
        "an existing file that is not a previous export is kept unless --force, and the store "
        "itself never.",
    )
    export.add_argument("--store", type=_path, required=True, help="results store")
    export.add_argument("--out", type=_path, required=True, help="CSV file to write")
    export.add_argument(
        "--force",
        action="store_true",
        help="replace --out even if it is not a previous export (never the store itself)",
    )

    report = commands.add_parser(
        "report",
        help="write a report: per-setting tables, Top-1/Top-3, heatmaps, curves (HTML)",
        description="Write DIR/index.html (self-contained: figures embedded, no network) with "
        "Markdown, CSV and PNG/SVG beside it, from a results store or from a published table "
        "(see docs/report.md).",
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", type=_path, help="results store to report on")
    source.add_argument(
        "--from-csv",
        type=_path,
        metavar="FILE",
        help="published results instead: CSV with columns setting,method,value[,std]",
    )
    report.add_argument(
        "--out", type=_path, required=True, metavar="DIR", help="directory to write"
    )
    report.add_argument(
        "--tolerance",
        metavar="X",
        help="heatmap band: cells within X of the best cell, absolute in the metric's units "
        "(0.01) or relative (2%%); default 0.01 for accuracy, 2%% otherwise",
    )
    report.add_argument("--rank-all", action="store_true", help="rank the reference optimizers too")
    report.add_argument(
        "--force",
        action="store_true",
        help="write into DIR even if it holds files an earlier report did not write",
    )
    report.add_argument(
        "--higher-is-better",
        action="store_true",
        help="with --from-csv: higher values are better (default: lower, as error and perplexity)",
    )

    commands.add_parser("tasks", help="list the tasks")
    commands.add_parser("methods", help="list the methods and their default grids")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``demon-optim`` and ``python -m demon_optim``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        code = _command(args)
        _flush_stdout()  # a full or closed stdout fails here, not at exit
        return code
    except BrokenPipeError:  # e.g. `demon-optim methods | head`
        _discard_stdout()
        sys.stderr.close()
        return 0
    except ConfigError as error:
        print(f"demon-optim: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # EnvironmentFailure and every other operating-system error
        print(f"demon-optim: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print("demon-optim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "export":
        return _export(args)
    if args.command == "report":
        return _report(args)
    if args.command == "data":
        return _data(args)
    if args.command == "tasks":
        return _tasks()
    return _methods()


def describe_os_error(error: OSError) -> str:
    """One line naming the path (when the error knows it) and the cause.

    EnvironmentFailure already is such a line; a plain OSError gives
    ``'path': cause`` (``'path' -> 'other': cause`` for a rename).
    """
    if isinstance(error, EnvironmentFailure) and error.filename is None:
        return _one_line(str(error))
    cause = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return _one_line(cause)
    where = f"'{os.fsdecode(error.filename)}'"
    if error.filename2 is not None:
        where += f" -> '{os.fsdecode(error.filename2)}'"
    return _one_line(f"{where}: {cause}")


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _print(text: str = "") -> None:
    """``print`` to stdout; a failing stdout (e.g. a full disk under ``>``) says so."""
    try:
        print(text)
    except BrokenPipeError:
        raise
    except OSError as error:
        _discard_stdout()
        raise _stdout_failure(error) from None


def _flush_stdout() -> None:
    if sys.stdout is None:  # started with stdout closed: prints went nowhere
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        _discard_stdout()
        raise _stdout_failure(error) from None


def _stdout_failure(error: OSError) -> EnvironmentFailure:
    from demon_optim.study.outputs import environment_failure

    return environment_failure(error, "write to standard output")


def _discard_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # no stdout, or not a real file
        pass


def _run(args: argparse.Namespace) -> int:
    from demon_optim.study.executors import run_study
    from demon_optim.study.results import summarize, to_markdown
    from demon_optim.study.spec import absolute_path, expand, load_study
    from demon_optim.study.store import ResultStore

    study = load_study(args.study)
    if args.data_dir is not None:
        study = dataclasses.replace(study, data_dir=absolute_path(args.data_dir))
    _check_data(study)  # a missing data set stops the study here, before any training
    specs = expand(study)
    store_path = args.store or pathlib.Path("runs") / f"{study.name}.sqlite"
    executor = _executor(args)
    with ResultStore(store_path) as store:
        pending = {spec.trial_id for spec in store.pending(specs)}
        elsewhere = len(pending & store.held_elsewhere())
        shared = (
            f" ({elsewhere} of them claimed by another driver of this store: this run takes "
            "the rest, then waits for those or takes them over if their lease expires)"
            if elsewhere
            else ""
        )
        print(
            f"study {study.name}: {len(specs)} trials, {len(specs) - len(pending)} already in "
            f"{store_path}; running {len(pending)} on {executor.workers} worker(s){shared}",
            file=sys.stderr,
        )
        report = run_study(specs, store, executor, progress=not args.no_progress)
        rows = store.rows(spec.trial_id for spec in specs)

    statuses = [row["status"] for row in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("done", "diverged", "failed"))
    if report.interrupted:
        print(
            f"\nInterrupted: {report.written} results of this run are saved; {len(rows)} of "
            f"{len(specs)} trials are in {store_path} ({counts}). Run the same command again "
            "to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED

    # The results are safe in the store from here on: the table file and the report are
    # extras whose failures are one line each and the exit code, never a traceback.
    tables = to_markdown(summarize(specs, rows))
    markdown_path = store_path.parent / f"{study.name}.md"
    code, table_note = _write_table(
        markdown_path,
        store_path,
        study.name,
        f"# Study {study.name}\n\n"
        f"{len(specs)} trials ({counts}); store `{store_path}`. Selection: per method, the "
        "configuration with the best mean validation metric over seeds; reported: its test "
        "metric, mean ± sample std over seeds (the mean alone with one seed).\n\n" + tables,
    )
    stdout_failure = None
    try:
        _print(tables)
    except EnvironmentFailure as error:  # e.g. `> file` on a full disk: the report still runs
        stdout_failure = error
    print(
        f"{len(specs)} trials ({counts}); this run: {report.written} in "
        f"{report.wall_time_s:.1f} s"
        + (f" ({report.elsewhere} by another driver)" if report.elsewhere else "")
        + f". {table_note}",
        file=sys.stderr,
    )
    code = max(code, _study_report(store_path, study.name, [spec.trial_id for spec in specs]))
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        _print_failures(failed)
        code = max(code, EXIT_FAILED_TRIALS)
    if stdout_failure is not None:
        raise stdout_failure
    return code


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
        return 0, f"No table file: {_one_line(str(error))}"
    except OSError as error:
        return EXIT_ENVIRONMENT, (
            f"No table file: {describe_os_error(error)} (the results are safe in {store_path})"
        )
    return 0, f"Table written to {path}"


def _executor(args: argparse.Namespace):
    if args.executor == "ray":
        from demon_optim.study.executors.ray import RayExecutor

        return RayExecutor(address=args.address, workers=args.workers)
    if args.address is not None:
        raise ConfigError("--address: only with --executor ray")
    from demon_optim.study.executors import LocalExecutor

    return LocalExecutor(args.workers)


def _check_data(study) -> None:
    from demon_optim.study.datasets import check_task_data
    from demon_optim.study.tasks import get_task

    for name in study.tasks:
        check_task_data(get_task(name), study.data_dir)


def _tasks_by_data_set() -> dict[str, list[str]]:
    """``{data set: names of the registered tasks that use it}``, for the catalogue.

    Built here, not in ``study.datasets``: the data layer does not know the tasks. A task's
    data set is its ``data_set`` (a catalogue entry), else its ``data_key``.
    """
    from demon_optim.study.tasks import list_tasks

    uses: dict[str, list[str]] = {}
    for task in list_tasks():
        uses.setdefault(getattr(task, "data_set", task.data_key), []).append(task.name)
    return uses


def _data(args: argparse.Namespace) -> int:
    from demon_optim.study.datasets import catalog_rows, format_table

    rows = catalog_rows(args.data_dir, verify=not args.no_verify, tasks=_tasks_by_data_set())
    _print(format_table(rows))
    return 0


def _study_report(store_path: pathlib.Path, name: str, trial_ids: list[str]) -> int:
    """Build the study's report beside its store and say where it is; returns an exit code.

    The results are already in the store, so nothing here raises: a missing matplotlib or a
    refusal (ConfigError) is one line and 0; an operating-system error (a full disk, a
    read-only folder) is one line and EXIT_ENVIRONMENT.
    """
    out = store_path.parent / f"{name}-report"
    try:
        from demon_optim.report import build_report

        with _writing_report(out):
            index = build_report(store_path, out, trial_ids=trial_ids)
    except ImportError as error:  # matplotlib is in the [study] extra
        print(f"No report: {error} (pip install 'demon-optim[study]')", file=sys.stderr)
        return 0
    except ConfigError as error:  # e.g. the folder holds a user's files: never replaced
        print(
            f"No report: {_one_line(str(error))}. To write it: demon-optim report --store "
            f"{store_path} --out DIR [--force]",
            file=sys.stderr,
        )
        return 0
    except OSError as error:
        print(
            f"No report: {describe_os_error(error)} (the results are safe in {store_path}; "
            f"write it later with: demon-optim report --store {store_path} --out DIR)",
            file=sys.stderr,
        )
        return EXIT_ENVIRONMENT
    print(
        f"Report: {index}  (open it in a browser; tables also in {out / 'report.md'})",
        file=sys.stderr,
    )
    return 0


@contextlib.contextmanager
def _writing_report(out: pathlib.Path) -> Iterator[None]:
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


def _print_failures(failed: list[dict]) -> None:
    by_error: dict[str, list[dict]] = {}
    for row in failed:
        first_line = (row["error"] or "unknown error").splitlines()[0]
        by_error.setdefault(first_line, []).append(row)
    print(
        f"\n{len(failed)} trials failed (they run again on the next `demon-optim run` of this "
        "study; tracebacks are in the store's `traceback` column):",
        file=sys.stderr,
    )
    for error, rows in by_error.items():
        first = rows[0]
        config = ", ".join(f"{k}={v}" for k, v in first["hyperparameters"].items())
        print(
            f"  {error}\n    {len(rows)} trial(s), e.g. {first['task']} {first['method']} "
            f"[{config}] seed {first['seed']} (trial {first['trial_id'][:12]})",
            file=sys.stderr,
        )


def _export(args: argparse.Namespace) -> int:
    from demon_optim.study.outputs import check_target, is_export, replace_atomically
    from demon_optim.study.store import ResultStore

    with ResultStore(args.store, readonly=True) as store:
        target = check_target(
            args.out,
            kind="a previous export (its first line is not the export header)",
            recognise=is_export,
            force=args.force,
            protected=[args.store],
        )
        with replace_atomically(target, shown=args.out) as temporary:
            count = store.export_csv(temporary)
    print(f"wrote {count} trials to {args.out}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from demon_optim.report import build_report, build_report_from_csv

    if args.from_csv is not None:
        if args.tolerance is not None:
            raise ConfigError("--tolerance: only with --store (a CSV has no heatmaps)")
        with _writing_report(args.out):
            index = build_report_from_csv(
                args.from_csv,
                args.out,
                higher_is_better=args.higher_is_better,
                rank_all=args.rank_all,
                force=args.force,
            )
    else:
        if args.higher_is_better:
            raise ConfigError(
                "--higher-is-better: only with --from-csv (a store knows each task's direction)"
            )
        with _writing_report(args.out):
            index = build_report(
                args.store,
                args.out,
                tolerance=args.tolerance,
                rank_all=args.rank_all,
                force=args.force,
            )
    print(f"report written to {index}", file=sys.stderr)
    return 0


def _tasks() -> int:
    from demon_optim.study.tasks import list_tasks

    rows = [
        (
            task.name,
            f"{task.metric} ({'higher' if task.higher_is_better else 'lower'} is better)",
            f"batch {task.batch_size}, {task.epochs} epochs",
            task.summary,
        )
        for task in list_tasks()
    ]
    _print_columns(("task", "metric", "defaults", "summary"), rows)
    return 0


def _methods() -> int:
    from demon_optim.study.methods import format_value, list_methods

    for method in list_methods():
        reference = "  (reference, outside the ranking)" if method.reference else ""
        _print(f"{method.name:22} {method.family:5} {method.summary}{reference}")
        grid = "  ".join(
            f"{name}=[{', '.join(format_value(v) for v in values)}]"
            for name, values in method.default_grid().items()
        )
        _print(f"{'':22} {grid}")
    return 0


def _print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        _print("  ".join([*cells, str(row[-1])]))
