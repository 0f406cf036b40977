"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch


def requires(module: str, why: str = "") -> pytest.MarkDecorator:
    """Skip when ``module`` is missing, except under CI=true, where a missing module fails."""
    missing = importlib.util.find_spec(module) is None
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {module!r} is not installed ({why or 'required by this test'})")
    return pytest.mark.skipif(missing, reason=f"{module} is not installed {why}".strip())


# --- devices ------------------------------------------------------------------------------------
# Tests parametrised over DEVICES run on the CPU everywhere and on CUDA where there is a GPU.
# Every CUDA case carries the `cuda` marker (registered in pyproject.toml), so that a GPU
# machine can run just those: `pytest -m cuda`.

CUDA = torch.cuda.is_available()
NO_CUDA = f"no CUDA device here (torch {torch.__version__}, " + (
    f"built for CUDA {torch.version.cuda})" if torch.version.cuda else "a CPU-only build)"
)
CUDA_MARKS = (pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason=NO_CUDA))
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_MARKS, id="cuda")]


def cuda_only(test: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a test CUDA-only: the `cuda` marker, and skipped (saying why) without a GPU."""
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """ "cpu", then "cuda" (skipped without a GPU)."""
    return request.param


@pytest.fixture
def restore_registries() -> Iterator[None]:
    """A test's plugins leave the task and method registries (and sys.modules) as they were."""
    from demon_optim.study import plugins
    from demon_optim.study.methods import registry as method_registry
    from demon_optim.study.tasks import registry as task_registry

    tasks, methods = dict(task_registry._TASKS), dict(method_registry._METHODS)
    modules = set(sys.modules)
    yield
    task_registry._TASKS.clear()
    task_registry._TASKS.update(tasks)
    method_registry._METHODS.clear()
    method_registry._METHODS.update(methods)
    plugins._LOADED.clear()
    for name in set(sys.modules) - modules:
        if name.startswith("demon_optim_plugin_"):
            del sys.modules[name]
