"""YellowFin against a trajectory recorded from the authors' PyTorch code, its new options
(adaptive clipping, sparsity debiasing, slow start, torch's buffer rule), and the ``yellowfin``
study method's trial ids across the change."""

from __future__ import annotations

import json
import math
import pathlib
import warnings

import numpy as np
import pytest
import torch

from demon_optim.errors import ConfigError
from demon_optim.optim import YellowFin
from demon_optim.study.methods import Budget, get_method
from demon_optim.study.spec import TrialSpec, expand, parse_study
from tests.yellowfin_problems import CASES, PROBLEMS, RECORD_EVERY, initial_params

FIXTURE = json.loads(
    (pathlib.Path(__file__).parent / "fixtures" / "yellowfin_reference.json").read_text()
)
# The authors' PyTorch code in YellowFin's terms (its other defaults are YellowFin's).
AUTHORS = {"smooth": False, "slow_start": True, "restart_at_zero_momentum": True}
LEGACY = {  # YellowFin and the study method before these options
    "initial_lr": 1e-3,
    "smooth": True,
    "slow_start": False,
    "adapt_clip": False,
    "restart_at_zero_momentum": False,
}
# Both sides run in float64 and differ only in the order of roundings (lerp against mul/add,
# foreach norms against sum(g*g), floats against 0-d tensors): measured at most 1e-13. 1e-9
# leaves room for other platforms' kernels, while the smallest real deviation met on the way
# (torch's rule that a momentum-0 step keeps no buffer) moved these trajectories by 1e-7 to
# 1e-4, and the original run with its float32 statistics differs by 2e-7 to 9e-5.
TOL = 1e-9


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(case: str, fused: bool | None = None, **overrides) -> dict:
    """Our YellowFin on a recorded case: applied lr and momentum per step, parameters."""
    problem, steps, lr, options = CASES[case]
    params = initial_params(problem)
    opt = YellowFin(params, initial_lr=lr, fused=fused, **{**AUTHORS, **options, **overrides})
    out: dict = {"lr": [], "momentum": [], "params": {}}
    for k in range(steps):
        opt.zero_grad()
        PROBLEMS[problem](params, k).backward()
        opt.step()
        out["lr"].append(opt.get_last_lr()[0])
        out["momentum"].append(opt.get_last_momentum()[0])
        if (k + 1) % RECORD_EVERY == 0 or k + 1 == steps:
            out["params"][str(k + 1)] = [v for p in params for v in p.detach().flatten().tolist()]
    return out


def assert_close(got: list[float], expected: list[float], what: str) -> None:
    got_a, expected_a = np.array(got), np.array(expected)
    scale = np.maximum(np.abs(expected_a), 1e-300)
    worst = int(np.argmax(np.abs(got_a - expected_a) / scale))
    assert abs(got_a[worst] - expected_a[worst]) <= TOL * scale[worst], (
        f"{what}[{worst}]: {got_a[worst]!r} against {expected_a[worst]!r}"
    )


@pytest.mark.parametrize("fused", [False, None], ids=["loop", "default"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_authors_code(case: str, fused: bool | None) -> None:
    expected = FIXTURE["cases"][case]
    got = run(case, fused)
    assert_close(got["lr"], expected["lr"], "lr")
    assert_close(got["momentum"], expected["momentum"], "momentum")
    assert got["params"].keys() == expected["params"].keys()
    for step, values in expected["params"].items():
        top = max(abs(v) for v in values)  # relative to the largest coordinate
        assert np.max(np.abs(np.array(got["params"][step]) - values)) <= TOL * top, step


def test_the_recorded_cases_exercise_the_options() -> None:
    cases = FIXTURE["cases"]
    for on, off in [
        ("noisy-clip", "noisy-noclip"),
        ("quadratic-lr1-clip", "quadratic-lr1-noclip"),
        ("sparse-debias", "sparse-plain"),
    ]:
        pairs = zip(cases[on]["lr"], cases[off]["lr"], strict=True)
        assert max(abs(a - b) / b for a, b in pairs) > 1e-3, on
    # the catastrophic-move cap: lr 10 against ||g|| = sqrt(409) becomes 100 / sqrt(409 + eps)
    assert cases["quadratic-lr10-clip"]["lr"][0] == pytest.approx(100 / math.sqrt(409 + 1e-6))
    # the slow start: the second step's rate is 2 / (10 * 20) of the solved one
    assert cases["quadratic-lr1e-3"]["lr"][1] < 0.01 * cases["quadratic-lr1e-3"]["lr"][-1]


def test_torch_buffer_rule_is_what_the_authors_code_does() -> None:
    """Keeping the momentum-0 step's buffer (the old rule) leaves the recorded trajectory."""
    got = run("quadratic-lr1e-3", restart_at_zero_momentum=False)
    expected = FIXTURE["cases"]["quadratic-lr1e-3"]["momentum"]
    pairs = zip(got["momentum"][2:], expected[2:], strict=True)
    assert max(abs(a - b) / b for a, b in pairs) > 1e-8


def test_momentum_zero_keeps_no_buffer() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    opt = YellowFin([p])
    p.grad = torch.ones(3)
    opt.step()
    assert opt.get_last_momentum() == [0.0] and "momentum_buffer" not in opt.state[p]
    opt = YellowFin([p], restart_at_zero_momentum=False)
    opt.step()
    assert torch.equal(opt.state[p]["momentum_buffer"], torch.ones(3))


def test_sparsity_counts_a_complex_gradient_as_its_real_view() -> None:
    z = torch.nn.Parameter(torch.zeros(4, dtype=torch.complex128))
    r = torch.nn.Parameter(torch.zeros(4, 2, dtype=torch.float64))
    opts = [YellowFin([z], sparsity_debias=True), YellowFin([r], sparsity_debias=True)]
    for k in range(30):
        g = torch.zeros(4, 2, dtype=torch.float64)
        g[k % 4, k % 2] = 1.0 + k  # one nonzero real number of eight
        z.grad, r.grad = torch.view_as_complex(g.clone()), g.clone()
        for opt in opts:
            opt.step()
    assert opts[0].tuner["sparsity"] == pytest.approx(1 / 8, rel=1e-12)
    assert torch.allclose(torch.view_as_real(z.detach()), r.detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"adapt_clip": "yes"}, "adapt_clip"),
        ({"sparsity_debias": 1}, "sparsity_debias"),
        ({"slow_start": None}, "slow_start"),
        ({"restart_at_zero_momentum": "no"}, "restart_at_zero_momentum"),
        ({"stat_protect_fac": 0.0}, "stat_protect_fac"),
        ({"catastrophic_move_thresh": -1.0}, "catastrophic_move_thresh"),
        ({"catastrophic_move_thresh": math.inf}, "catastrophic_move_thresh"),
    ],
)
def test_bad_options_name_the_argument(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got "):
        YellowFin([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_checkpoint_from_before_the_options_continues_as_it_ran() -> None:
    """A tuner state without the new keys (saved by the old code) runs on without them."""

    def make(params):
        return YellowFin(params, beta=0.9, **LEGACY)

    def steps(opt, params, ks):
        for k in ks:
            opt.zero_grad()
            PROBLEMS["noisy"](params, k).backward()
            opt.step()

    straight = initial_params("noisy")
    steps(make(straight), straight, range(60))
    params = initial_params("noisy")
    opt = make(params)
    steps(opt, params, range(30))
    saved = opt.state_dict()
    tuner_state = next(s["yellowfin"] for s in saved["state"].values() if "yellowfin" in s)
    for key in ("adapt_clip", "stat_protect_fac", "catastrophic_move_thresh", "slow_start"):
        del tuner_state[key]
    for key in ("sparsity_debias", "restart_at_zero_momentum", "sparsity_avg", "sparsity"):
        del tuner_state[key]
    del tuner_state["grad_norm_squared"]
    fresh = YellowFin(params)  # today's defaults: the checkpoint's (absent) options win
    fresh.load_state_dict(saved)
    steps(fresh, params, range(30, 60))
    assert torch.equal(params[0].detach(), straight[0].detach())


# --- the study method -------------------------------------------------------------------------

# Computed with the code before these options (main at 7d5a348); they must not move.
OLD_ID = "40bb83a3b32180c4a79d05f78edfe5190bf75458268cd4f73e959c3fb2d53737"
OLD_STUDY_IDS = {  # mnist1d-mlp, 3 epochs, seed 0: (lr, weight_decay) -> id
    (0.5, 0.0): "0fd6d77e6e135fe56e044ddcf45efcfd2207164d3c66802b0784c47bd3e34d6e",
    (0.5, 1e-4): "811c8d2d326a609f9483f36d207f56cda11f7d513147fa95919cb0ae8a9cfafa",
    (1.0, 0.0): "6f08d633905dc8393dec1adab1ff89c526da7f4902127dc9d9caa8792a3583a6",
    (1.0, 1e-4): "77690f60cae3435988c3ab309dfd4edfa48463f4759b5ca34c9e98522b198e08",
}
# The old code's trajectory of that configuration: 120 steps of the noisy problem.
OLD_PARAMS = [
    0.677924205351505,
    -0.5151250264525387,
    0.08103430745618627,
    0.008513511320723513,
    -0.025701449205423835,
]
OLD_LR, OLD_MOMENTUM = 0.0011395462492383782, 0.08601348398505863


def study(grid: dict) -> list[TrialSpec]:
    raw = {"tasks": ["mnist1d-mlp"], "methods": ["yellowfin"], "seeds": [0], "epochs": 3}
    return expand(parse_study({**raw, "grid": {"yellowfin": grid}}))


def test_an_existing_trial_keeps_its_id() -> None:
    spec = TrialSpec("digits-mlp", "yellowfin", (("lr", 1.0), ("weight_decay", 0.0)), 0, 2, 100)
    assert spec.trial_id == OLD_ID
    assert TrialSpec.from_json(spec.to_json()).trial_id == OLD_ID  # a stored row reloads
    # the new hyperparameters written out at the values those trials ran with: the same ids
    legacy_grid = {**LEGACY, "sparsity_debias": False}
    specs = study({"lr": [0.5, 1.0], "weight_decay": [0, 1e-4], **legacy_grid})
    ids = {(s.config["lr"], s.config["weight_decay"]): s.trial_id for s in specs}
    assert ids == OLD_STUDY_IDS


def test_new_values_get_new_ids() -> None:
    ids = set(OLD_STUDY_IDS.values())
    default = study({"lr": 1.0, "weight_decay": 0})  # today's defaults: the new options on
    assert len(default) == 1 and default[0].trial_id not in ids
    assert default[0].config == {
        "lr": 1.0,
        "weight_decay": 0.0,
        "initial_lr": 1.0,
        "slow_start": 1.0,
        "adapt_clip": 1.0,
        "restart_at_zero_momentum": 1.0,
    }
    for change in [{"adapt_clip": True}, {"sparsity_debias": True}, {"initial_lr": 0.1}]:
        (spec,) = study({"lr": 1.0, "weight_decay": 0, **LEGACY, **change})
        assert spec.trial_id not in ids
        ids.add(spec.trial_id)


def test_an_existing_trial_behaves_as_it_did() -> None:
    method = get_method("yellowfin")
    config = method.check_config({"lr": 1.0, "weight_decay": 0.0})
    params = initial_params("noisy")
    opt = method.build(params, config, Budget(1, 10)).optimizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(120):
            opt.zero_grad()
            PROBLEMS["noisy"](params, k).backward()
            opt.step()
    assert params[0].detach().tolist() == pytest.approx(OLD_PARAMS, rel=1e-12)
    assert opt.get_last_lr()[0] == pytest.approx(OLD_LR, rel=1e-12)
    assert opt.get_last_momentum()[0] == pytest.approx(OLD_MOMENTUM, rel=1e-12)
    tuner = opt.tuner
    assert not tuner["adapt_clip"] and not tuner["slow_start"] and tuner["smooth"]


def test_method_builds_the_options_it_is_given() -> None:
    method = get_method("yellowfin")
    config = method.check_config(
        {"lr": 0.5, "weight_decay": 0, "adapt_clip": 1, "sparsity_debias": True, "smooth": 0}
    )
    assert config == {
        "lr": 0.5,
        "weight_decay": 0.0,
        "adapt_clip": 1.0,
        "sparsity_debias": 1.0,
        "smooth": 0.0,
    }
    opt = method.build(torch.nn.Linear(2, 1).parameters(), config, Budget(1, 10)).optimizer
    tuner = opt.tuner
    assert tuner["adapt_clip"] and tuner["sparsity_debias"] and not tuner["smooth"]
    assert tuner["lr"] == 1e-3 and not tuner["slow_start"]  # absent: as the old trials ran


@pytest.mark.parametrize("bad", [2, "yes", 0.5, None])
def test_switches_take_true_false_one_zero(bad: object) -> None:
    method = get_method("yellowfin")
    assert method.check_grid({"adapt_clip": [True, 0]}, "grid.yellowfin") == {
        "adapt_clip": (1.0, 0.0)
    }
    with pytest.raises(ConfigError, match=r"^grid.yellowfin.adapt_clip: got "):
        method.check_grid({"adapt_clip": bad}, "grid.yellowfin")
    with pytest.raises(ConfigError, match=r"^grid.yellowfin.adapt_clip: .*repeated"):
        method.check_grid({"adapt_clip": [True, 1]}, "grid.yellowfin")


def test_a_stored_configuration_still_needs_its_old_hyperparameters() -> None:
    with pytest.raises(ConfigError, match=r"missing weight_decay for method 'yellowfin'"):
        get_method("yellowfin").check_config({"lr": 1.0})
