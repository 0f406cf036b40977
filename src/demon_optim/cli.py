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
import os
import pathlib
import sys
from collections.abc import Sequence

from demon_optim.errors import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED_TRIALS,  # noqa: F401  (the command's exit codes, importable from here)
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigError,
    EnvironmentFailure,
    describe_os_error,
)
from demon_optim.errors import one_line as _one_line


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
    run.add_argument(
        "--device",
        metavar="DEVICE",
        help="where trials train: auto (a CUDA GPU when there is one; the default), cpu, "
        "cuda, cuda:N or mps; overrides the study's `device` (not part of a trial's id)",
    )
    run.add_argument(
        "--workers-per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="local executor on GPUs: K worker processes per GPU, for small models (default 1)",
    )
    run.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0,
        metavar="F",
        help="with --executor ray: the GPUs (or a fraction) each trial asks Ray for",
    )
    run.add_argument(
        "--batch-trials",
        metavar="auto|N|off",
        help="train up to N trials of the study together as stacked models (auto: N from "
        "the model's size, the default; off: one at a time); overrides the study's "
        "`batch_trials` (how trials run, not part of their ids; see docs/batched-trials.md)",
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
        description="Write one CSV row per trial run here (imported published results are "
        "left out). The file is replaced whole or not at all; "
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
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="validation target of TASK for the time-to-target view and the performance "
        "profiles, e.g. mnist1d-cnn=0.9 (repeat for several tasks); default: the target its "
        "trials recorded (their study's [targets], else the task's own)",
    )
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
    report.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        type=_path,
        metavar="PATH",
        help="with --store: first import published results into the store (AlgoPerf "
        "eval_measurements.csv logs, DeepOBS run .json files, or folders of them; "
        "repeatable; all or nothing), shown apart from your own trials",
    )

    imports = commands.add_parser(
        "import",
        help="import published results (AlgoPerf logs, DeepOBS runs) into a store",
        description="Import AlgoPerf eval_measurements.csv logs (with hparams.json) and DeepOBS "
        "run .json files, or folders of them, into a results store as imported trials (see "
        "docs/report.md). All or nothing: a malformed file is an error naming it and its line "
        "or field, and nothing is imported. A file imported before adds nothing.",
    )
    imports.add_argument("--store", type=_path, required=True, help="results store to write")
    imports.add_argument("paths", nargs="+", type=_path, metavar="PATH", help="files or folders")

    for name, what in (
        ("tasks", "list the tasks"),
        ("methods", "list the methods and their grids"),
    ):
        listing = commands.add_parser(name, help=what)
        listing.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="FILE|MODULE",
            help="import a study plugin first (a .py file or a module name), to list its "
            f"{name} too; repeatable",
        )
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
    if args.command == "import":
        return _import(args.store, args.paths)
    from demon_optim.study.plugins import load_plugins

    load_plugins(args.plugin)  # tasks, methods: list a plugin's too
    if args.command == "tasks":
        return _tasks()
    return _methods()


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
    from demon_optim.study.results import to_markdown
    from demon_optim.study.runner import run

    def echo(text: str) -> None:
        print(text, file=sys.stderr)

    result = run(
        args.study,
        store=args.store,
        workers=args.workers,
        executor=args.executor,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        address=args.address,
        echo=echo,
        device=args.device,
        workers_per_gpu=args.workers_per_gpu,
        gpus_per_trial=args.gpus_per_trial,
        batch_trials=_batch_trials(args.batch_trials),
    )
    specs, progress = result.specs, result.progress
    assert progress is not None
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items())
    if result.interrupted:
        echo(
            f"\nInterrupted: {progress.written} results of this run are saved; "
            f"{len(result.rows)} of {len(specs)} trials are in {result.store} ({counts}). Run "
            "the same command again to resume."
        )
        return EXIT_INTERRUPTED
    table_note, report_note = result.notes
    stdout_failure = None
    try:
        _print(to_markdown(result.tables))
    except EnvironmentFailure as error:  # e.g. `> file` on a full disk: the rest still runs
        stdout_failure = error
    notes = [f"{progress.elsewhere} by another driver"] if progress.elsewhere else []
    if progress.batched:
        plural = "es" if progress.batches != 1 else ""
        notes.append(f"{progress.batched} trained in {progress.batches} batch{plural}")
    echo(
        f"{len(specs)} trials ({counts}); this run: {progress.written} in "
        f"{progress.wall_time_s:.1f} s"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f". {table_note}"
    )
    echo(report_note)
    if result.failed:
        _print_failures(result.failed)
    if stdout_failure is not None:
        raise stdout_failure
    return result.exit_code


def _batch_trials(text: str | None) -> str | int | None:
    """``--batch-trials``: ``auto``, ``off`` or a number (checked by the runner, which names
    the option and the allowed values)."""
    if text is not None and text.strip().isdigit():
        return int(text.strip())
    return text


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
    from demon_optim.study.runner import writing_report

    if args.from_csv is not None:
        if args.tolerance is not None:
            raise ConfigError("--tolerance: only with --store (a CSV has no heatmaps)")
        if args.target:
            raise ConfigError("--target: only with --store (a CSV has no per-epoch history)")
        if args.imports:
            raise ConfigError("--import: only with --store (imported trials go into a store)")
        with writing_report(args.out):
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
        if args.imports:
            _import(args.store, args.imports)
        with writing_report(args.out):
            index = build_report(
                args.store,
                args.out,
                tolerance=args.tolerance,
                rank_all=args.rank_all,
                force=args.force,
                targets=_targets(args.target),
            )
    print(f"report written to {index}", file=sys.stderr)
    return 0


def _targets(items: Sequence[str]) -> dict[str, float]:
    """``--target TASK=VALUE`` options as ``{task: value}`` (the report checks each task
    against the store and each value against the task's metric)."""
    targets: dict[str, float] = {}
    for item in items:
        task, equals, text = item.partition("=")
        task, text = task.strip(), text.strip()
        try:
            value = float(text)
        except ValueError:
            value = None
        if not equals or not task or value is None:
            raise ConfigError(f"--target: got {item!r}; allowed: TASK=VALUE, e.g. mnist1d-cnn=0.9")
        if task in targets:
            raise ConfigError(f"--target: got {task!r} twice; allowed: one target per task")
        targets[task] = value
    return targets


def _import(store: pathlib.Path, paths: Sequence[pathlib.Path]) -> int:
    from demon_optim.study.imports import import_paths

    print(import_paths(store, paths).message(), file=sys.stderr)
    return 0


def _tasks() -> int:
    from demon_optim.study.tasks import list_tasks

    rows = [
        (
            task.name,
            f"{task.metric} ({'higher' if task.higher_is_better else 'lower'} is better)",
            f"batch {task.batch_size}, {task.epochs} epochs"
            + ("" if task.target is None else f", target {task.target:g}"),
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
