"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import os

import pytest


def requires(module: str, why: str = "") -> pytest.MarkDecorator:
    """Skip when ``module`` is missing, except under CI=true, where a missing module fails."""
    missing = importlib.util.find_spec(module) is None
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {module!r} is not installed ({why or 'required by this test'})")
    return pytest.mark.skipif(missing, reason=f"{module} is not installed {why}".strip())
