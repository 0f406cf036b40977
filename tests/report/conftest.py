"""A small synthetic results store with known answers, and the headless-browser check.

The store is written through the store's public API (ResultStore.write of TrialResults), on
the registered task ``mnist1d-mlp`` (accuracy, higher is better; no data is loaded).

Settings and what the report must find (test accuracy, mean over 2 seeds unless said):

A. mnist1d-mlp · SGDM · 10 epochs
   demon-sgdm  lr {0.01, 0.1} x momentum {0.9, 0.95}; selected lr=0.1, m=0.9 (best val)
               test 0.79 / 0.81 -> 0.80                                      rank 1
   sgdm+lr-cosine  one configuration, test 0.80 / 0.80 -> 0.80 (a tie)       rank 1
   sgdm+lr-step    test 0.78                                                 rank 3
   sgdm        same grid: (0.1, 0.9) seed 1 diverged, (0.1, 0.95) seed 0 failed;
               selected (0.01, 0.95), test 0.75                              rank 4
   heatmap cells (test): demon  .60 .695 / .80 .79 ; sgdm .792 .75 / div failed
   band, 0.01 absolute: best .80, threshold .79 -> demon 2 cells, sgdm 1 cell
B. mnist1d-mlp · Adam · 10 epochs
   adamw (reference) 0.76 | adam+lr-cosine 0.74 (1) | demon-adam 0.72 (2) | adam 0.70 (3)
   adam+lr-step: both seeds diverged -> no result, unranked, diverged 2
C. mnist1d-mlp · SGDM · 20 epochs: demon-sgdm alone, 3 seeds 0.70 / 0.71 / 0.72
   -> 0.71 ± 0.01, 95 % CI ± 4.303 * 0.01 / sqrt(3)                          rank 1

Top-1 / Top-3 (reference outside): demon 2/3 of 3 settings, lr-cosine 2/2 of 2,
lr-step 0/1 of 2, none 0/1 of 2.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from demon_optim import schedules
from demon_optim.study.methods import get_method
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.trial import TrialResult
from tests import mounts

TASK = "mnist1d-mlp"
STEPS_PER_EPOCH = 10


def _spec(method: str, seed: int, epochs: int, **values: float) -> TrialSpec:
    config = dict(get_method(method).grid()[0])
    config.update(values)
    return TrialSpec(TASK, method, tuple(config.items()), seed, epochs, 100)


def _history(spec: TrialSpec, final_val: float, upto: int | None = None) -> tuple[dict, ...]:
    config = spec.config
    total = spec.epochs * STEPS_PER_EPOCH
    records = []
    for epoch in range(1, (upto or spec.epochs) + 1):
        k = epoch * STEPS_PER_EPOCH - 1  # the epoch's last step
        momentum = config.get("momentum", 0.9)
        if spec.method.startswith("demon"):
            momentum = schedules.demon(k, total, momentum)
        lr = config["lr"]
        if "cosine" in spec.method:
            lr = schedules.cosine(k, total, lr)
        records.append(
            {
                "epoch": epoch,
                "train_loss": 2.0 / epoch,
                "val_metric": final_val * (1 - 0.5 / epoch),
                "lr": lr,
                "momentum": momentum,
                "steps": epoch * STEPS_PER_EPOCH,
                "elapsed_s": 0.01 * epoch,
                "train_s": 0.008 * epoch,  # the training steps' share of elapsed_s
            }
        )
    return tuple(records)


def _result(spec: TrialSpec, status: str, val: float = 0.0, test: float = 0.0) -> TrialResult:
    done = status == "done"
    return TrialResult(
        spec=spec,
        status=status,
        val_metric=val if done else None,
        test_metric=test if done else None,
        history=_history(spec, val or 0.5, None if done else 2),
        wall_time_s=0.5,
        started_at=time.time(),
        versions={"torch": "test", "demon_optim": "test"},
        error=None if done else f"{status} on purpose",
        traceback="Traceback (synthetic)" if status == "failed" else None,
    )


def trials() -> list[TrialResult]:
    out: list[TrialResult] = []

    def both(method: str, epochs: int, val: float, tests: tuple[float, ...], **hp: float) -> None:
        for seed, test in enumerate(tests):
            out.append(_result(_spec(method, seed, epochs, **hp), "done", val, test))

    # A: SGDM, 10 epochs
    demon_cells = {  # (lr, momentum): (val, (test seed 0, test seed 1))
        (0.01, 0.9): (0.60, (0.60, 0.60)),
        (0.01, 0.95): (0.70, (0.69, 0.70)),
        (0.1, 0.9): (0.80, (0.79, 0.81)),
        (0.1, 0.95): (0.75, (0.79, 0.79)),
    }
    for (lr, m), (val, tests) in demon_cells.items():
        both("demon-sgdm", 10, val, tests, lr=lr, momentum=m)
    both("sgdm+lr-cosine", 10, 0.79, (0.80, 0.80), lr=0.1, momentum=0.9)
    both("sgdm+lr-step", 10, 0.77, (0.78, 0.78), lr=0.1, momentum=0.9)
    both("sgdm", 10, 0.70, (0.792, 0.792), lr=0.01, momentum=0.9)
    both("sgdm", 10, 0.78, (0.75, 0.75), lr=0.01, momentum=0.95)
    out.append(_result(_spec("sgdm", 0, 10, lr=0.1, momentum=0.9), "done", 0.95, 0.95))
    out.append(_result(_spec("sgdm", 1, 10, lr=0.1, momentum=0.9), "diverged"))
    out.append(_result(_spec("sgdm", 0, 10, lr=0.1, momentum=0.95), "failed"))
    out.append(_result(_spec("sgdm", 1, 10, lr=0.1, momentum=0.95), "done", 0.9, 0.9))
    # B: Adam, 10 epochs
    both("adamw", 10, 0.76, (0.76, 0.76), lr=1e-3, momentum=0.9)
    both("adam+lr-cosine", 10, 0.74, (0.74, 0.74), lr=1e-3, momentum=0.9)
    both("demon-adam", 10, 0.72, (0.72, 0.72), lr=1e-4, momentum=0.9)
    both("adam", 10, 0.70, (0.70, 0.70), lr=1e-3, momentum=0.9)
    for seed in (0, 1):
        out.append(_result(_spec("adam+lr-step", seed, 10, lr=1e-3, momentum=0.9), "diverged"))
    # C: a setting with a single method, 3 seeds
    both("demon-sgdm", 20, 0.71, (0.70, 0.71, 0.72), lr=0.1, momentum=0.9)
    return out


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("store") / "synthetic.sqlite"
    with ResultStore(path) as store:
        for result in trials():
            store.write(result)
    return path


# --- the browser ------------------------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str:
    """The headless browser to use: $CHROMIUM, else the first of CHROMIUM_NAMES on PATH.

    Skips when there is none, except under CI=true, where a missing browser fails the test
    (CI installs Debian's ``chromium``, as ``requires`` does for Python modules).
    """
    candidates = [os.environ.get("CHROMIUM", "")] + [shutil.which(n) or "" for n in CHROMIUM_NAMES]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    why = (
        "no Chromium browser found (looked for $CHROMIUM and "
        f"{', '.join(CHROMIUM_NAMES)}; install it with: apt-get install -y chromium)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


# --- a full disk and a read-only file system (tests/mounts.py) ----------------------------------


@pytest.fixture
def tiny_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 1 MiB tmpfs, unmounted afterwards: fill it (``tests.mounts.fill``) to make a full disk."""
    with mounts.tmpfs(tmp_path / "tiny") as path:
        yield path


@pytest.fixture
def read_only() -> Iterator[Callable[[pathlib.Path], None]]:
    """``read_only(folder)`` makes ``folder`` read-only (a read-only bind mount on itself)."""
    with contextlib.ExitStack() as mounted:
        yield lambda folder: mounted.enter_context(mounts.read_only(folder))


# Added to a page before loading it: after the load event, mark every image with whether
# it decoded (naturalWidth > 0).
_CHECK = """<script>
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (ok) loaded++;
  }
  document.body.setAttribute("data-images", images.length + "/" + loaded);
});
</script>"""


def rendered_dom(page: pathlib.Path, tmp_path: pathlib.Path) -> str:
    """The DOM headless Chromium builds from the HTML file ``page`` (plus :data:`_CHECK`,
    so every ``<img>`` carries ``data-loaded`` and the body ``data-images="N/loaded"``)."""
    browser = chromium_binary()
    checked = tmp_path / "check.html"  # the report plus the checking script; the report has none
    checked.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        checked.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
