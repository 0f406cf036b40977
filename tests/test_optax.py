"""demon_optim.optax: the optax transformations equal the torch optimizers.

Every comparison runs several hundred steps past T (T = 200, 400 steps) from the same
initial parameters: to 1e-10 in float64 (JAX's x64 mode, switched on only inside the
``x64`` fixture, since it is global) and to 1e-5 of the parameters' size in float32.
The gradients are either a fixed random sequence fed to both frameworks, or each
framework's own gradients of a least-squares problem.
"""

from __future__ import annotations

import functools
import importlib
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonAdamW, DemonSGD, schedules
from tests.conftest import requires

try:
    import jax
    import jax.numpy as jnp
    import optax

    from demon_optim import optax as dx
except ImportError:  # the tests that need them skip (or fail under CI=true)
    jax = jnp = optax = dx = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
T, STEPS = 200, 400
SHAPES = {"w": (5, 3), "b": (3,)}

pytestmark = pytest.mark.filterwarnings("ignore:.*is at or past total_steps")


def needs_jax(test: Callable[..., Any]) -> Callable[..., Any]:
    for mark in (requires("jax", "(the [jax] extra)"), requires("optax", "(the [jax] extra)")):
        test = mark(test)
    return test


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """torch's CPU kernels on these tiny tensors are fastest on one thread (and an OpenMP
    team on a busy machine costs milliseconds a step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def x64() -> Iterator[None]:
    """JAX's float64 mode for one test (jit caches are keyed by it, so nothing leaks)."""
    with jax.enable_x64(True):
        yield


def problem(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial parameters and STEPS gradients per parameter, float64 numpy."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = {k: rng.standard_normal((STEPS, *s)) for k, s in SHAPES.items()}
    return params, grads


def torch_run(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    params: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    dtype: torch.dtype,
    lr: Callable[[int], float] | None = None,
) -> dict[str, np.ndarray]:
    """The torch optimizer fed the fixed gradients; ``lr(k)`` sets the rate of step k."""
    ps = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    opt = make(list(ps.values()))
    for i in range(STEPS):
        if lr is not None:
            opt.param_groups[0]["lr"] = lr(i)
        for k, p in ps.items():
            p.grad = torch.tensor(grads[k][i], dtype=dtype)
        opt.step()
    return {k: p.detach().numpy() for k, p in ps.items()}


def scan_updates(tx: Any, params: Any, grads: Any, state: Any = None) -> tuple[Any, Any]:
    """Apply ``tx`` to each gradient in turn (stacked on axis 0); returns (params, state)."""

    def body(carry: tuple[Any, Any], g: Any) -> tuple[tuple[Any, Any], None]:
        p, s = carry
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    carry, _ = jax.lax.scan(body, (params, tx.init(params) if state is None else state), grads)
    return carry


@functools.cache
def compiled_run(tx: Any) -> Callable[..., Any]:
    """``scan_updates`` for ``tx``, jitted once (jit's cache then keys dtype and x64)."""
    return jax.jit(lambda p, g: scan_updates(tx, p, g))


def jax_run(
    tx: Any, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], dtype: Any
) -> dict[str, np.ndarray]:
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    g = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    out, _ = compiled_run(tx)(p, g)
    return {k: np.asarray(v) for k, v in out.items()}


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float) -> None:
    """Each leaf within ``tol`` of the reference, relative to the leaf's largest entry."""
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        err = np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()
        assert err <= tol, f"{k}: relative error {err:.2e} > {tol:.0e}"


# the same optimizer in both frameworks: (torch maker, optax maker)
CASES: dict[str, tuple[Callable[..., Any], Callable[[], Any]]] = {
    "sgd": (
        lambda ps: DemonSGD(ps, lr=0.01, momentum=0.9, total_steps=T),
        lambda: dx.demon_sgd(0.01, 0.9, total_steps=T),
    ),
    "sgd-nesterov": (
        lambda ps: DemonSGD(ps, lr=0.01, momentum=0.9, nesterov=True, total_steps=T),
        lambda: dx.demon_sgd(0.01, 0.9, nesterov=True, total_steps=T),
    ),
    "sgd-dampening-decay-maximize-delay": (
        lambda ps: DemonSGD(
            ps, 0.01, 0.8, 0.3, 0.1, maximize=True, delay=0.25, total_steps=T, fused=False
        ),
        lambda: dx.demon_sgd(0.01, 0.8, 0.3, 0.1, maximize=True, delay=0.25, total_steps=T),
    ),
    "adam": (
        lambda ps: DemonAdam(ps, lr=1e-3, total_steps=T),
        lambda: dx.demon_adam(1e-3, total_steps=T),
    ),
    "adam-damped": (
        lambda ps: DemonAdam(ps, lr=1e-2, damped=True, total_steps=T),
        lambda: dx.demon_adam(1e-2, damped=True, total_steps=T),
    ),
    "adam-coupled-decay-maximize-delay": (
        lambda ps: DemonAdam(
            ps, 1e-3, (0.95, 0.99), 1e-6, 0.1, maximize=True, delay=0.5, total_steps=T
        ),
        lambda: dx.demon_adam(1e-3, 0.95, 0.99, 1e-6, 0.1, maximize=True, delay=0.5, total_steps=T),
    ),
    "adamw-damped": (
        lambda ps: DemonAdamW(ps, lr=1e-2, weight_decay=0.1, damped=True, total_steps=T),
        lambda: dx.demon_adamw(1e-2, weight_decay=0.1, damped=True, total_steps=T),
    ),
}


# --- the schedule ---------------------------------------------------------------------------


@needs_jax
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize(
    ("beta_init", "total", "delay"),
    [(0.9, 200, 0.0), (0.999, 200, 0.0), (0.0, 50, 0.0), (0.9, 7, 0.0), (0.9, 1, 0.0),
     (0.9, 200, 0.75), (0.5, 9, 0.3), (0.9, 1, 0.9)],
)  # fmt: skip
def test_schedule_equals_the_torch_schedule(
    precision: str, beta_init: float, total: int, delay: float
) -> None:
    ks = np.arange(3 * total + 5)
    want = np.array([schedules.demon(int(k), total, beta_init, delay) for k in ks])
    with jax.enable_x64(precision == "float64"):
        schedule = dx.demon_schedule(beta_init, total, delay)
        got = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(ks, jnp.int32)))
        one = schedule(jnp.asarray(total // 2, jnp.int32))  # a jnp scalar in the default float
        assert one.shape == () and one.dtype == jnp.result_type(float)
    assert got.dtype == precision
    np.testing.assert_allclose(got, want, rtol=1e-13 if precision == "float64" else 1e-6, atol=0)
    assert (got[ks >= total] == 0).all() and (got >= 0).all() and (got < 1).all()


@needs_jax
def test_schedule_keeps_float32_precision_near_the_end_of_a_long_run() -> None:
    """T up to int32's limit: steps left and steps taken stay exact integers, so float32
    loses no digits to the cancellation in T - beta k."""
    total = dx.MAX_TOTAL_STEPS
    ks = [0, 1, 2**24 + 1, total // 2, total - 1000, total - 3, total - 1, total]
    schedule = jax.jit(dx.demon_schedule(0.999, total))
    for k in ks:
        want = schedules.demon(k, total, 0.999)
        got = float(schedule(jnp.asarray(k, jnp.int32)))
        assert got == pytest.approx(want, rel=1e-6, abs=0), k


@needs_jax
def test_schedule_checks_its_arguments() -> None:
    cases = [
        ((1.0, 10), "beta_init"),
        ((-0.1, 10), "beta_init"),
        ((0.9, 0), "total_steps"),
        ((0.9, 2**31), "total_steps"),
        ((0.9, 10.0), "total_steps"),
        ((0.9, 10, 1.0), "delay"),
    ]
    for args, field in cases:
        with pytest.raises(ConfigError, match=rf"^{field}: got"):
            dx.demon_schedule(*args)


# --- the optimizers against torch -------------------------------------------------------------


@needs_jax
@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_equals_torch_in_float64(case: str, x64: None) -> None:
    make_torch, make_optax = CASES[case]
    params, grads = problem()
    want = torch_run(make_torch, params, grads, torch.float64)
    assert_close(jax_run(make_optax(), params, grads, jnp.float64), want, 1e-10)


@needs_jax
@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_equals_torch_in_float32(case: str) -> None:
    make_torch, make_optax = CASES[case]
    params, grads = problem()
    want = torch_run(make_torch, params, grads, torch.float32)
    assert_close(jax_run(make_optax(), params, grads, jnp.float32), want, 1e-5)


@needs_jax
@pytest.mark.parametrize("case", ["sgd-nesterov", "adam", "adam-damped"])
def test_least_squares_with_each_frameworks_own_gradients(case: str, x64: None) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((64, 5)), rng.standard_normal((64, 3))
    params, _ = problem()
    make_torch, make_optax = CASES[case]

    ps = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_torch(list(ps.values()))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * ((xt @ ps["w"] + ps["b"] - yt) ** 2).mean()).backward()
        opt.step()
    want = {k: p.detach().numpy() for k, p in ps.items()}

    def loss(p: dict[str, Any]) -> Any:
        return 0.5 * jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    tx = make_optax()

    @jax.jit
    def train(p: dict[str, Any]) -> dict[str, Any]:
        def body(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (p, tx.init(p)), None, length=STEPS)[0][0]

    got = train({k: jnp.asarray(v) for k, v in params.items()})
    assert_close({k: np.asarray(v) for k, v in got.items()}, want, 1e-10)


@needs_jax
def test_eager_updates_equal_the_jitted_scan(x64: None) -> None:
    params, grads = problem()
    tx = dx.demon_adam(1e-2, damped=True, weight_decay=0.01, total_steps=T)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for i in range(STEPS):
        updates, state = tx.update({k: jnp.asarray(g[i]) for k, g in grads.items()}, state, p)
        p = optax.apply_updates(p, updates)
    want = jax_run(tx, params, grads, jnp.float64)
    assert_close({k: np.asarray(v) for k, v in p.items()}, want, 1e-13)
    (demon_state,) = [s for s in state if isinstance(s, dx.DemonAdamState)]
    assert int(demon_state.count) == STEPS


@needs_jax
@pytest.mark.parametrize("case", ["sgd-nesterov", "adam-damped"])
def test_vmap_over_a_batch_of_problems(case: str, x64: None) -> None:
    """One vmapped run of three problems equals each problem's own run (and torch's)."""
    make_torch, make_optax = CASES[case]
    tx = make_optax()
    problems = [problem(seed) for seed in range(3)]
    stack = {
        part: {k: jnp.stack([jnp.asarray(pr[i][k]) for pr in problems]) for k in SHAPES}
        for i, part in enumerate(("params", "grads"))
    }
    batched, states = jax.jit(jax.vmap(lambda p, g: scan_updates(tx, p, g)))(
        stack["params"], stack["grads"]
    )
    for b, (params, grads) in enumerate(problems):
        got = {k: np.asarray(v[b]) for k, v in batched.items()}
        assert_close(got, jax_run(tx, params, grads, jnp.float64), 1e-13)
        assert_close(got, torch_run(make_torch, params, grads, torch.float64), 1e-10)
    assert jax.tree.leaves(states)[0].shape == (3,)  # one count per problem


@needs_jax
def test_float32_parameters_keep_float32_state_under_x64(x64: None) -> None:
    params = {"w": jnp.ones((2, 2), jnp.float32)}
    for tx in (
        dx.demon_sgd(0.1, dampening=0.1, weight_decay=0.1, total_steps=T),
        dx.demon_adam(0.1, damped=True, total_steps=T),
    ):
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(params, state, params)
        assert updates["w"].dtype == jnp.float32
        tensors = [x for x in jax.tree.leaves(state) if x.ndim]
        assert tensors and all(x.dtype == jnp.float32 for x in tensors)


# --- optax.inject_hyperparams and learning-rate schedules --------------------------------------


@needs_jax
@pytest.mark.parametrize("nesterov", [False, True])
def test_inject_hyperparams_puts_demon_on_optax_sgd(nesterov: bool, x64: None) -> None:
    """inject_hyperparams' schedules see count 0 at the first update: no offset needed."""
    params, grads = problem()
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=0.01, momentum=dx.demon_schedule(0.9, T, delay=0.1), nesterov=nesterov
    )
    want = torch_run(
        lambda ps: DemonSGD(ps, 0.01, 0.9, nesterov=nesterov, delay=0.1, total_steps=T),
        params,
        grads,
        torch.float64,
    )
    assert_close(jax_run(tx, params, grads, jnp.float64), want, 1e-10)

    # the momentum each update applied is the one it records: demon(k) at update k
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    step = jax.jit(tx.update)
    for k in range(T + 3):
        _, state = step({n: jnp.asarray(g[k]) for n, g in grads.items()}, state, p)
        assert float(state.hyperparams["momentum"]) == pytest.approx(
            schedules.demon(k, T, 0.9, 0.1), rel=1e-14, abs=0
        )


@needs_jax
def test_inject_hyperparams_wraps_demon_adam(x64: None) -> None:
    """The Demon optimizers take array hyperparameters (the learning rate here) from
    inject_hyperparams; the schedule's shape must be static."""
    params, grads = problem()
    tx = optax.inject_hyperparams(dx.demon_adam, static_args=("total_steps", "delay"))(
        learning_rate=1e-3, weight_decay=0.01, total_steps=T
    )
    assert_close(
        jax_run(tx, params, grads, jnp.float64),
        jax_run(dx.demon_adam(1e-3, weight_decay=0.01, total_steps=T), params, grads, jnp.float64),
        1e-14,
    )
    p = {k: jnp.asarray(v) for k, v in params.items()}
    with pytest.raises(ConfigError, match=r"^total_steps: .*static_args"):
        optax.inject_hyperparams(dx.demon_adam)(learning_rate=1e-3, total_steps=T).init(p)


@needs_jax
@pytest.mark.parametrize("case", ["sgd", "adam-damped"])
def test_learning_rate_as_an_optax_schedule(case: str, x64: None) -> None:
    lr = optax.cosine_decay_schedule(0.02, decay_steps=300, alpha=0.1)
    make = {
        "sgd": (
            lambda ps: DemonSGD(ps, lr=float(lr(0)), momentum=0.9, total_steps=T),
            lambda: dx.demon_sgd(lr, 0.9, total_steps=T),
        ),
        "adam-damped": (
            lambda ps: DemonAdam(ps, lr=float(lr(0)), damped=True, total_steps=T),
            lambda: dx.demon_adam(lr, damped=True, total_steps=T),
        ),
    }[case]
    params, grads = problem()
    want = torch_run(make[0], params, grads, torch.float64, lr=lambda k: float(lr(k)))
    assert_close(jax_run(make[1](), params, grads, jnp.float64), want, 1e-10)


# --- state ----------------------------------------------------------------------------------


@needs_jax
@pytest.mark.parametrize("case", ["sgd-schedule", "adam-damped"])
def test_checkpoint_mid_schedule_continues_as_an_uninterrupted_run(
    case: str, tmp_path: pathlib.Path
) -> None:
    """Stop at step 150 (before T), save params and state as numpy arrays, restore into a
    fresh optimizer's state structure, continue to 400: the very same numbers."""
    make = {
        "sgd-schedule": lambda: dx.demon_sgd(
            optax.linear_schedule(0.02, 0.0, 300), 0.9, 0.1, nesterov=False, total_steps=T
        ),
        "adam-damped": lambda: dx.demon_adam(1e-2, damped=True, total_steps=T),
    }[case]
    params, grads = problem()
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    g = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
    first = {k: v[:150] for k, v in g.items()}
    rest = {k: v[150:] for k, v in g.items()}
    run = jax.jit(lambda p, g, s: scan_updates(make(), p, g, s))

    whole, _ = run(p, g, make().init(p))
    p_mid, s_mid = run(p, first, make().init(p))
    leaves = jax.tree.leaves((p_mid, s_mid))
    np.savez(tmp_path / "ckpt.npz", *[np.asarray(x) for x in leaves])

    fresh = make()
    treedef = jax.tree.structure((p, fresh.init(p)))
    with np.load(tmp_path / "ckpt.npz") as saved:
        restored = [jnp.asarray(saved[f"arr_{i}"]) for i in range(len(saved.files))]
    p_back, s_back = jax.tree.unflatten(treedef, restored)
    resumed, _ = jax.jit(lambda p, g, s: scan_updates(fresh, p, g, s))(p_back, rest, s_back)
    for k in whole:
        np.testing.assert_array_equal(np.asarray(resumed[k]), np.asarray(whole[k]))


@needs_jax
def test_gradient_accumulation_advances_the_schedule_once_per_update() -> None:
    """optax.MultiSteps over 2 micro-batches: 8 micro-batches are 4 updates, so T = 4."""
    tx = optax.MultiSteps(dx.demon_sgd(0.1, total_steps=4), every_k_schedule=2)
    p = {"w": jnp.ones(3)}
    state, step = tx.init(p), jax.jit(tx.update)
    for _ in range(8):
        updates, state = step({"w": jnp.ones(3)}, state, p)
        p = optax.apply_updates(p, updates)
    (inner,) = [s for s in state.inner_opt_state if isinstance(s, dx.DemonMomentumState)]
    assert int(inner.count) == 4


# --- arguments ------------------------------------------------------------------------------


@needs_jax
def test_bad_arguments_name_the_field() -> None:
    cases = [
        (lambda: dx.demon_sgd(0.1, 1.0, total_steps=T), "momentum"),
        (lambda: dx.demon_sgd(-0.1, total_steps=T), "learning_rate"),
        (lambda: dx.demon_sgd(0.1, dampening=0.1, nesterov=True, total_steps=T), "nesterov"),
        (lambda: dx.demon_sgd(0.1, 0.0, nesterov=True, total_steps=T), "nesterov"),
        (lambda: dx.demon_sgd(0.1, total_steps=0), "total_steps"),
        (lambda: dx.demon_sgd(0.1, weight_decay=float("nan"), total_steps=T), "weight_decay"),
        (lambda: dx.demon_sgd(0.1, nesterov="yes", total_steps=T), "nesterov"),
        (lambda: dx.demon_adam(0.1, b1=1.0, total_steps=T), "b1"),
        (lambda: dx.demon_adam(0.1, b2=1.5, total_steps=T), "b2"),
        (lambda: dx.demon_adam(0.1, eps=-1.0, total_steps=T), "eps"),
        (lambda: dx.demon_adam(0.1, total_steps=2**31), "total_steps"),
        (lambda: dx.demon_adam(0.1, delay=1.0, total_steps=T), "delay"),
        (lambda: dx.demon_adam(0.1, damped=1, total_steps=T), "damped"),
    ]
    for build, field in cases:
        with pytest.raises(ConfigError, match=rf"^{field}: got"):
            build()


# --- without JAX ------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["jax", "optax"])
def test_without_jax_the_import_says_how_to_install_it(
    missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` sees when it is absent
    monkeypatch.delitem(sys.modules, "demon_optim.optax", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module("demon_optim.optax")
    message = str(info.value)
    assert 'pip install "demon-optim[jax]"' in message
    assert missing in message and "\n" not in message


def test_importing_demon_optim_does_not_import_jax() -> None:
    code = "import sys, demon_optim; print(sorted({'jax', 'optax'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


# --- the documentation's example ---------------------------------------------------------------


def docs_example() -> str:
    """The python code block of the "## JAX / optax" section of docs/integrations.md."""
    text = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    section = re.search(r"^## JAX / optax\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "docs/integrations.md has no '## JAX / optax' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the section has one complete python example"
    return blocks[0]


@needs_jax
def test_the_documented_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(docs_example(), "docs/integrations.md", "exec"), namespace)
    final = namespace["final_loss"]
    assert set(final) >= {"demon_sgd", "optax.sgd + demon_schedule", "demon_adam"}
    assert all(loss < 1e-3 for loss in final.values()), final  # the noise floor is 5e-5
    # the same optimizer written two ways
    assert final["demon_sgd"] == pytest.approx(final["optax.sgd + demon_schedule"], rel=1e-4)
    assert "final loss" in capsys.readouterr().out
