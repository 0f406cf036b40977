"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
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
