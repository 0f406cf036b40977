"""Named studies, in the same TOML format as a study file (``docs/study.md``).

They live here as text, not as package-data files, so an installed wheel always has them;
``demon-optim run NAME`` parses them exactly like ``demon-optim run FILE.toml``.
"""

from __future__ import annotations

from demon_optim.errors import invalid

SMOKE = """
description = "Tiny check that a study runs end to end (digits, 2 epochs, seconds)."
tasks = ["digits-mlp"]
methods = ["sgdm", "demon-sgdm", "adam", "demon-adam"]
seeds = [0, 1]
epochs = 2

[grid.sgdm]
lr = 0.1
momentum = 0.9

[grid.demon-sgdm]
lr = 0.1
momentum = 0.9

[grid.adam]
lr = 1e-3
momentum = 0.9

[grid.demon-adam]
lr = 1e-4
momentum = 0.9
"""

QUICK = """
description = '''
The main job: MNIST-1D (MLP), the key schedules of the SGDM and Adam families and Demon,
a small grid, 2 seeds; about a minute with 2 workers on 2 cores. sgdm and demon-sgdm run a
3 x 3 lr x momentum product, for the robustness heatmaps.'''
tasks = ["mnist1d-mlp"]
methods = [
    "sgdm", "sgdm+lr-step", "sgdm+lr-cosine", "sgdm+lr-linear", "sgdm+onecycle", "demon-sgdm",
    "adam", "adam+lr-step", "adam+lr-cosine", "adam+lr-linear", "adam+onecycle", "demon-adam",
]
seeds = [0, 1]
epochs = 60

[grid.sgdm]
lr = [0.03, 0.1, 0.3]
momentum = [0.8, 0.9, 0.95]

[grid.demon-sgdm]
lr = [0.03, 0.1, 0.3]
momentum = [0.8, 0.9, 0.95]

[grid."sgdm+lr-step"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+lr-cosine"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+lr-linear"]
lr = [0.1, 0.3, 1.0]
momentum = 0.9

[grid."sgdm+onecycle"]
lr = [0.1, 0.3, 1.0]
momentum_range = [0.95, 0.85]

[grid.adam]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-step"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-cosine"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+lr-linear"]
lr = [3e-3, 1e-2, 3e-2]
momentum = 0.9

[grid."adam+onecycle"]
lr = [3e-3, 1e-2, 3e-2]
momentum_range = [0.95, 0.85]

# Undamped Demon Adam: about (1 - beta_init) times Adam's learning rates.
[grid.demon-adam]
lr = [3e-4, 1e-3, 3e-3]
momentum = 0.9
"""

MNIST1D = """
description = '''
MNIST-1D's three published models (MLP 68 %, CNN 94 %, GRU 91 % test accuracy with Adam,
lr 1e-2, batch 100, 6000 steps) with Adam and Demon Adam at the published budget (170
epochs of 35 steps), 2 learning rates, 2 seeds; about 10 minutes with 2 workers.'''
tasks = ["mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru"]
methods = ["adam", "demon-adam"]
seeds = [0, 1]
epochs = 170

[grid.adam]
lr = [3e-3, 1e-2]
momentum = 0.9

[grid.demon-adam]
lr = [3e-4, 1e-3]
momentum = 0.9
"""

_PRESETS = {"smoke": SMOKE, "quick": QUICK, "mnist1d": MNIST1D}


def preset_names() -> list[str]:
    """Names accepted by ``demon-optim run NAME``."""
    return sorted(_PRESETS)


def preset_text(name: str) -> str:
    """The TOML text of a preset (its name is the study name)."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise invalid("preset", name, preset_names()) from None
