"""The own-task study from Python: ``demon_optim.study.run``, from the TOML file and from a dict.

    python examples/own_task/run_from_python.py                  # the whole study, ~1-2 min
    python examples/own_task/run_from_python.py --epochs 3 --seeds 0 --workers 1   # seconds

``run()`` does what ``demon-optim run`` does (validate, train what the store lacks, write
the table and the report) and returns a ``StudyRun``; failed trials do not raise, they are
in ``result.failed``. Calling it again resumes: finished trials are skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli package (in demon-optim's [study] extra)
    import tomli as tomllib

from demon_optim.study import run
from demon_optim.study.results import to_markdown

HERE = pathlib.Path(__file__).resolve().parent
STUDY = HERE / "study.toml"


def show(result) -> None:  # a demon_optim.study.StudyRun
    print(to_markdown(result.tables))  # one ranked table per task and budget
    for row in result.table("breast-cancer-mlp").rows:  # the same rows, as objects
        test = "-" if row.test_mean is None else f"{row.test_mean:.4f}"  # None: unselectable
        print(f"  {row.rank or '-':>2}  {row.method:<18} test {test}  {row.shown}")
    for trial in result.failed:  # store rows; the traceback is in trial["traceback"]
        print(f"failed: {trial['method']} {trial['hyperparameters']}: {trial['error']}")
    print(f"store:  {result.store}")  # every trial, per-epoch history included
    print(f"report: {result.report}")  # index.html: tables, Top-1/Top-3, heatmaps, curves
    print(f"exit code: {result.exit_code}\n")  # as `demon-optim run` would exit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="runs/own-task.sqlite")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--epochs", type=int, default=None, help="default: the study file's")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    args = parser.parse_args()

    # 1. The study file as it is (its plugin paths are relative to the file). A changed
    #    epoch budget or seeds need the dict form below, so only the plain case uses it.
    if args.epochs is None and args.seeds is None:
        result = run(STUDY, store=args.store, workers=args.workers, echo=print)
        show(result)

    # 2. The same keys as a dict: here plugin paths are relative to the current folder, so
    #    make them absolute. The same task, method, hyperparameters, seed and epochs give
    #    the same trial ids: with the store of step 1 nothing is trained twice.
    with STUDY.open("rb") as file:
        study = tomllib.load(file)
    study["plugins"] = [str(HERE / plugin) for plugin in study["plugins"]]
    if args.epochs is not None:
        study["epochs"] = args.epochs
    if args.seeds is not None:
        study["seeds"] = args.seeds
    result = run(study, store=args.store, workers=args.workers, echo=print)
    show(result)

    # 3. A dict written by hand: the Adam family and Lion, two learning rates each, one of
    #    them beyond the study's grid. Trials at the study's lrs are already in the store;
    #    only the new ones are trained. Its own name gives it its own table and report.
    result = run(
        {
            "name": "own-task-adam",
            "plugins": [str(HERE / "tasks.py"), str(HERE / "lion.py")],
            "tasks": ["breast-cancer-mlp"],
            "methods": ["adam", "demon-adam", "my-lion"],
            "seeds": study["seeds"],
            "epochs": study["epochs"],
            "grid": {
                "adam": {"lr": [1e-3, 3e-3], "momentum": 0.9},
                "demon-adam": {"lr": [1e-4, 3e-4], "momentum": 0.9},
                "my-lion": {"lr": [3e-4, 1e-3]},
            },
        },
        store=args.store,
        workers=args.workers,
        echo=print,
    )
    show(result)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
