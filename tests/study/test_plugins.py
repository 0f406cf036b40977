"""A user's own task and method through the protocol: study plugins, register_method, run().

The plugin files are written by the tests: a regression task with its own loss and metric
(mean squared error, lower is better) on a fixed synthetic problem, and user methods (torch
Adagrad, which has no momentum; RMSprop with a per-step warm-up and a per-epoch hook).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from demon_optim.errors import ConfigError
from demon_optim.study import StudyRun, plugins, run
from demon_optim.study.store import ResultStore

PLUGIN = '''
import math
import torch
from demon_optim.study import Split, Task, TaskData, Training, register_method, register_task

EPOCH_METRICS = []  # what the after_epoch hook saw (checked in-process)


@register_task
class Line(Task):
    """y = 3x - 1 plus noise: a linear model, mean squared error (lower is better)."""

    name = "user-line"
    summary = "a line fit by a linear model; metric: mean squared error"
    metric = "mse"
    higher_is_better = False
    batch_size = 16
    epochs = 3
    data_key = "user-line"

    def _load_data(self, data_dir):
        g = torch.Generator().manual_seed(0)
        def split(n):
            x = torch.randn(n, 1, generator=g)
            return Split(x, 3 * x - 1 + 0.1 * torch.randn(n, 1, generator=g))
        return TaskData(split(96), split(32), split(32))

    def build_model(self):
        return torch.nn.Linear(1, 1)

    def loss(self, outputs, targets):
        return torch.nn.functional.mse_loss(outputs, targets)

    def evaluate(self, model, split):
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model(split.inputs), split.targets))


def adagrad(params, *, budget, lr):
    return torch.optim.Adagrad(params, lr=lr)


def rmsprop_warmup(params, *, budget, lr, alpha, centered, warmup):
    opt = torch.optim.RMSprop(params, lr=lr, alpha=alpha, centered=centered)
    steps = max(1, round(warmup * budget.total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / steps))
    return Training(opt, after_step=[sched.step], after_epoch=[EPOCH_METRICS.append])


register_method("user-adagrad", build=adagrad, grid={"lr": [0.1, 0.3]})
register_method(
    "user-rmsprop",
    build=rmsprop_warmup,
    grid={"lr": [0.01, 0.03], "alpha": 0.99, "centered": False, "warmup": 1.0},
    family="sgdm",
)
'''


@pytest.fixture(autouse=True)
def clean_registries(restore_registries: None) -> None:
    """Each test's plugins leave both registries as they were."""


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def study(tmp_path: pathlib.Path, plugin: str = "my_plugin.py", **extra: object) -> pathlib.Path:
    """A study file beside the plugin: the user's task, their methods and two built-ins."""
    lines = [
        'name = "mine"',
        f"plugins = [{json.dumps(plugin)}]",
        'tasks = ["user-line"]',
        'methods = ["sgdm", "demon-sgdm", "user-adagrad", "user-rmsprop"]',
        "seeds = [0]",
        "epochs = 2",
        *(f"{key} = {json.dumps(value)}" for key, value in extra.items()),
        "[grid.sgdm]",
        "lr = 0.03",
        "momentum = 0.9",
        "[grid.demon-sgdm]",
        "lr = 0.03",
        "momentum = 0.9",
    ]
    return write(tmp_path / "mine.toml", "\n".join(lines) + "\n")


def test_a_plugin_file_puts_a_users_task_and_methods_through_the_protocol(
    tmp_path: pathlib.Path,
) -> None:
    write(tmp_path / "my_plugin.py", PLUGIN)
    result = run(study(tmp_path), store=tmp_path / "out" / "mine.sqlite", workers=1)
    assert isinstance(result, StudyRun) and not result.failed and result.exit_code == 0
    table = result.table("user-line")
    assert table.metric == "mse" and not table.higher_is_better
    assert {row.method for row in table.rows} == {
        "sgdm",
        "demon-sgdm",
        "user-adagrad",
        "user-rmsprop",
    }
    assert [row.rank for row in table.rows] == sorted(row.rank for row in table.rows)
    means = [row.test_mean for row in table.rows]
    assert means == sorted(means)  # lower is better: best first
    assert result.store.is_file() and result.report is not None and result.report.is_file()
    assert result.markdown is not None and "user-rmsprop" in result.markdown.read_text()
    with ResultStore(result.store, readonly=True) as store:
        rows = {(r["method"], r["hyperparameters"].get("lr")): r for r in store.rows()}
    # Adagrad has no momentum: recorded as missing; its lr is recorded
    adagrad = rows[("user-adagrad", 0.1)]
    assert [h["momentum"] for h in adagrad["history"]] == [None, None]
    assert [h["lr"] for h in adagrad["history"]] == [0.1, 0.1]
    # RMSprop: its groups have momentum (0); the warm-up moved lr to its peak within epoch 2
    rmsprop = rows[("user-rmsprop", 0.01)]
    assert rmsprop["hyperparameters"] == {
        "lr": 0.01,
        "alpha": 0.99,
        "centered": False,
        "warmup": 1.0,
    }
    # a per-step warm-up over T = 12 steps: half way at epoch 1's last step, then the peak
    first, second = (h["lr"] for h in rmsprop["history"])
    assert first == pytest.approx(0.005) and second == pytest.approx(0.01)
    # the after_epoch hooks got each epoch's validation metric
    plugin = sys.modules[plugins.module_name(str((tmp_path / "my_plugin.py").resolve()))]
    vals = [
        h["val_metric"]
        for r in rows.values()
        if r["method"] == "user-rmsprop"
        for h in r["history"]
    ]
    assert sorted(plugin.EPOCH_METRICS) == sorted(vals)
    assert [h["momentum"] for h in rmsprop["history"]] == [0.0, 0.0]
    # the store keeps each trial's plugin and its digest, and how to read it
    spec = rmsprop["spec"]
    assert spec["plugins"][0]["path"] == str((tmp_path / "my_plugin.py").resolve())
    assert len(spec["plugins"][0]["sha256"]) == 64
    assert spec["about"] == {
        "metric": "mse",
        "higher_is_better": False,
        "family": "sgdm",
        "reference": False,
        "schedule": "user-rmsprop",
    }
    html = result.report.read_text()
    assert "user-rmsprop" in html and "user-adagrad" in html


def cli(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    """``demon-optim ...`` in a fresh process (no plugin imported beforehand)."""
    return subprocess.run(
        [sys.executable, "-m", "demon_optim", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_a_module_plugin_runs_in_spawned_workers_and_a_report_needs_no_plugin(
    tmp_path: pathlib.Path,
) -> None:
    """The module is found through PYTHONPATH (as an installed package would be); two
    workers are spawned processes, which import it themselves. Once it is gone, the report
    of the store still renders: the store says how each trial reads."""
    write(tmp_path / "pkg" / "userpkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "userpkg" / "tasks.py", PLUGIN)
    path = study(tmp_path, plugin="userpkg.tasks")
    env_path = f"{tmp_path / 'pkg'}"
    store = tmp_path / "runs" / "mine.sqlite"
    done = subprocess.run(
        [sys.executable, "-m", "demon_optim", "run", str(path), "--store", str(store),
         "--workers", "2", "--no-progress"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| user-rmsprop |" in done.stdout and "(mse, lower is better)" in done.stdout
    with ResultStore(store, readonly=True) as results:
        rows = results.rows()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done"}
    assert rows[0]["spec"]["plugins"][0]["module"] == "userpkg.tasks"

    # the plugin is gone: a report is built from the store alone
    import shutil

    shutil.rmtree(tmp_path / "pkg")
    out = tmp_path / "report"
    report = cli("report", "--store", str(store), "--out", str(out))
    assert report.returncode == 0, report.stderr
    html = (out / "index.html").read_text()
    assert "user-rmsprop" in html and "mse" in html and "lower is better" in html


def _broken(tmp_path: pathlib.Path, text: str | None, plugin: str = "my_plugin.py") -> str:
    if text is not None:
        write(tmp_path / plugin, text)
    done = cli("run", str(study(tmp_path, plugin=plugin)), "--store", str(tmp_path / "s.sqlite"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demon-optim: error: plugins[0]: ")
    assert not (tmp_path / "s.sqlite").exists()  # nothing trained, no store made
    return lines[0]


def test_broken_plugins_are_one_line_naming_the_plugin_and_nothing_runs(
    tmp_path: pathlib.Path,
) -> None:
    plugin = str((tmp_path / "my_plugin.py").resolve())
    missing = _broken(tmp_path, None)
    assert "my_plugin.py" in missing and "no such file" in missing
    syntax = _broken(tmp_path, "import torch\n\ndef broken(:\n    pass\n")
    assert f"{plugin}, line 3: SyntaxError" in syntax
    raises = _broken(tmp_path, "import torch\n\n\nraise RuntimeError('no GPU here')\n")
    assert f"importing {plugin} raised RuntimeError: no GPU here (line 4)" in raises
    nothing = _broken(tmp_path, "import torch\nX = 1\n")
    assert f"{plugin} registers no task or method" in nothing
    module = _broken(tmp_path, None, plugin="nosuchpackage.tasks")
    assert "nosuchpackage" in module and "importable module name" in module


def test_names_other_code_holds_are_refused(tmp_path: pathlib.Path) -> None:
    clash = PLUGIN.replace('name = "user-line"', 'name = "mnist1d-mlp"')
    write(tmp_path / "my_plugin.py", clash)
    taken = (
        r"raised ConfigError: task name 'mnist1d-mlp': already registered by "
        r"demon_optim.study.tasks.mnist1d.MNIST1DMLP, so Line in .*my_plugin.py cannot"
    )
    with pytest.raises(ConfigError, match=taken):
        run(study(tmp_path), store=tmp_path / "s.sqlite", workers=1)
    clash = PLUGIN.replace('register_method("user-adagrad"', 'register_method("sgdm"')
    write(tmp_path / "other.py", clash)
    taken = r"method name 'sgdm': already registered by demon-optim's built-in methods, so adagrad"
    with pytest.raises(ConfigError, match=taken):
        run(study(tmp_path, plugin="other.py"), store=tmp_path / "s.sqlite", workers=1)


def test_importing_a_plugin_twice_is_fine(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "my_plugin.py", PLUGIN)
    first = run(study(tmp_path), store=tmp_path / "a.sqlite", workers=1)
    second = run(study(tmp_path), store=tmp_path / "a.sqlite", workers=1)  # resumes
    assert second.progress is not None and second.progress.written == 0
    assert [r.test_mean for r in second.tables[0].rows] == [
        r.test_mean for r in first.tables[0].rows
    ]


def test_run_from_a_dict_and_a_changed_plugin_warns_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "my_plugin.py", PLUGIN)
    monkeypatch.chdir(tmp_path)  # a dict's paths are relative to the current folder
    config = {
        "name": "from-python",
        "plugins": ["my_plugin.py"],
        "tasks": ["user-line"],
        "methods": ["user-adagrad", "demon-adam"],
        "seeds": [0, 1],
        "epochs": 1,
        "grid": {"user-adagrad": {"lr": 0.3}, "demon-adam": {"lr": 0.01, "momentum": 0.9}},
    }
    result = run(config, workers=1)
    assert result.store == pathlib.Path("runs/from-python.sqlite") and not result.failed
    assert len(result.specs) == 4 and result.report is not None
    (table,) = result.tables
    assert {row.method: row.seeds for row in table.rows} == {"user-adagrad": 2, "demon-adam": 2}
    write(tmp_path / "my_plugin.py", PLUGIN + "\n# edited\n")
    with pytest.warns(UserWarning, match=r"plugin changed since stored trials .*my_plugin.py \(4"):
        again = run({**config, "seeds": [0, 1, 2]}, workers=1)
    assert again.progress is not None and again.progress.written == 2
    notes: list[str] = []
    run(config, workers=1, echo=notes.append)
    assert sum("plugin changed" in note for note in notes) == 1


def test_failed_trials_of_a_users_method_do_not_raise(tmp_path: pathlib.Path) -> None:
    broken = PLUGIN + textwrap.dedent("""
        def on_fire(params, *, budget, lr):
            raise RuntimeError("optimizer on fire")

        register_method("user-broken", build=on_fire, grid={"lr": 0.1})
    """)
    write(tmp_path / "my_plugin.py", broken)
    path = write(
        tmp_path / "b.toml",
        'plugins = ["my_plugin.py"]\ntasks = ["user-line"]\nmethods = ["user-broken", '
        '"user-adagrad"]\nseeds = [0]\nepochs = 1\n',
    )
    result = run(path, store=tmp_path / "b.sqlite", workers=1)
    assert result.exit_code == 1 and len(result.failed) == 1
    assert result.failed[0]["error"] == "RuntimeError: optimizer on fire"
    assert {r.method for r in result.tables[0].rows if r.rank} == {"user-adagrad"}


def test_a_build_that_returns_something_else_fails_its_trial(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "my_plugin.py", PLUGIN + textwrap.dedent('''
        register_method("user-none", build=lambda params, *, budget, lr: None, grid={"lr": 0.1})
    '''))  # fmt: skip
    path = write(
        tmp_path / "n.toml",
        'plugins = ["my_plugin.py"]\ntasks = ["user-line"]\nmethods = ["user-none"]\n'
        "seeds = [0]\nepochs = 1\n",
    )
    result = run(path, store=tmp_path / "n.sqlite", workers=1)
    assert (
        "build() returned: got None; allowed: a torch.optim.Optimizer" in result.failed[0]["error"]
    )


def test_a_users_task_says_its_data_is_missing_before_anything_trains(
    tmp_path: pathlib.Path,
) -> None:
    missing = PLUGIN.replace(
        "    def build_model(self):",
        "    def check_data(self, data_dir):\n"
        "        from demon_optim.study.datasets import DataUnavailableError\n"
        "        raise DataUnavailableError('user-line: put line.csv in --data-dir')\n\n"
        "    def build_model(self):",
    )
    write(tmp_path / "my_plugin.py", missing)
    done = cli("run", str(study(tmp_path)), "--store", str(tmp_path / "s.sqlite"))
    assert done.returncode == 2
    assert done.stderr.strip() == "demon-optim: error: user-line: put line.csv in --data-dir"
    assert not (tmp_path / "s.sqlite").exists()
