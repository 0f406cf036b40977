"""Today's baselines (Muon + AdamW, Lion, Schedule-Free AdamW) as study methods.

Muon gets the hidden weights only and is torch's Muon on them; the composite optimizer's
state round-trips (an interrupted and resumed training equals an uninterrupted one, and so
does an interrupted and resumed study); Schedule-Free is evaluated at its averaged weights
and trains on at its own; Lion follows its paper's equations in float64; Demon moves the
momentum it should and nothing else; a missing package is a one-line error.
"""

from __future__ import annotations

import copy
import io
import math
import pathlib
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch

from demon_optim import schedules
from demon_optim.errors import ConfigError
from demon_optim.optim import CompositeOptimizer, Muon, muon_with_adamw, split_hidden
from demon_optim.report.naming import is_reference, schedule_name
from demon_optim.study.executors import LocalExecutor, run_study
from demon_optim.study.methods import Budget, Training, get_method, method_names, register_method
from demon_optim.study.models import MLP, ConvNet1D
from demon_optim.study.spec import TrialSpec
from demon_optim.study.store import ResultStore
from demon_optim.study.tasks import get_task
from demon_optim.study.trial import TrialResult, run_trial
from tests.conftest import requires

needs_mnist1d = requires("mnist1d", "(generates the MNIST-1D data)")
needs_lion = requires("lion_pytorch", '(pip install "demon-optim[baselines]")')
needs_schedulefree = requires("schedulefree", '(pip install "demon-optim[baselines]")')

LR_SUFFIXES = (
    "",
    "+lr-step",
    "+lr-cosine",
    "+lr-linear",
    "+lr-warmup-linear",
    "+lr-exponential",
    "+lr-plateau",
)
BASELINES = (
    [f"muon{s}" for s in LR_SUFFIXES]
    + ["demon-muon"]
    + [f"lion{s}" for s in LR_SUFFIXES]
    + ["demon-lion", "schedulefree-adamw"]
)
INSTALL = 'pip install "demon-optim[baselines]"'


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP(12, (16, 16), 4, residual=True)  # weights 16x12 (input), 16x16, 4x16 (output)


def data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


STEPS_PER_EPOCH = 4


def train(model: torch.nn.Module, training: Training, steps: range, batch: int = 16) -> list:
    """Steps ``steps`` of minibatch training (batch ``k % 4``), the hooks after each step, the
    epoch hooks after every 4th (with a made-up validation metric)."""
    x, y = data()
    losses = []
    for k in steps:
        i = (k % STEPS_PER_EPOCH) * batch
        loss = torch.nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
        training.optimizer.zero_grad()
        loss.backward()
        training.optimizer.step()
        for hook in training.after_step:
            hook()
        if k % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
            for epoch_hook in training.after_epoch:
                epoch_hook(1.0 / (k + 1))
        losses.append(loss.item())
    return losses


def build(name: str, model: torch.nn.Module, total: int, **config: object) -> Training:
    """``name``'s Training for ``total`` steps (epochs of 4 steps) of its first configuration."""
    method = get_method(name)
    budget = Budget(math.ceil(total / STEPS_PER_EPOCH), STEPS_PER_EPOCH)
    return method.build(model.parameters(), {**method.grid()[0], **config}, budget)


# --- registry ---------------------------------------------------------------------------------


def test_registered_as_adam_family_references_with_documented_grids() -> None:
    assert [n for n in method_names() if n in BASELINES] == BASELINES
    for name in BASELINES:
        method = get_method(name)
        assert method.family == "adam" and method.reference, name
        assert schedule_name(name) == name and is_reference(name)
    assert get_method("muon").default_grid() == {
        "lr": (0.003, 0.01, 0.03, 0.1),
        "momentum": (0.95,),
        "adamw_lr": (3e-3,),
        "weight_decay": (0.0,),
    }
    assert get_method("lion").default_grid() == {
        "lr": (3e-5, 1e-4, 3e-4, 1e-3),
        "momentum": (0.9,),
        "beta2": (0.99,),
        "weight_decay": (0.0,),
    }
    assert get_method("schedulefree-adamw").default_grid() == {
        "lr": (3e-4, 1e-3, 3e-3, 1e-2),
        "momentum": (0.9,),
        "beta2": (0.999,),
        "weight_decay": (0.0,),
        "warmup": (0.02,),
    }
    # names from outside a store (a published table's rows) are references alike
    assert is_reference("Muon+my-schedule") and is_reference("DEMON-LION")
    assert not is_reference("muonish")
    assert get_method("demon-muon").default_grid()["delay"] == (0.0,)
    assert get_method("lion+lr-step").default_grid()["milestones"] == ((0.5, 0.75),)
    assert get_method("muon+lr-warmup-linear").default_grid()["warmup"] == (0.1,)
    with pytest.raises(ConfigError, match=r"grid.lion.lr\[0\]: got 0"):
        get_method("lion").check_grid({"lr": [0, 1e-4]}, "grid.lion")  # Lion needs lr > 0


# --- Muon: the split, torch's update ------------------------------------------------------------


def test_muon_gets_only_the_hidden_weights_and_adamw_the_rest() -> None:
    model = MLP(40, (100, 100), 10, residual=True)
    opt = get_method("muon").build(model.parameters(), get_method("muon").grid()[0], Budget(1, 5))
    composite = opt.optimizer
    assert isinstance(composite, CompositeOptimizer)
    muon, adamw = composite.optimizers
    assert isinstance(muon, Muon) and type(adamw) is torch.optim.AdamW
    in_muon = [p for g in muon.param_groups for p in g["params"]]
    in_adamw = [p for g in adamw.param_groups for p in g["params"]]
    assert in_muon == [model.hidden[1].weight]
    assert {id(p) for p in in_adamw} == {
        id(p) for p in model.parameters() if p is not model.hidden[1].weight
    }
    assert composite.param_groups == muon.param_groups + adamw.param_groups
    assert composite.param_groups[0] is muon.param_groups[0]  # what the trial records
    # a CNN: the hidden conv kernels (3-D), not the first conv nor the classifier
    cnn = ConvNet1D(40, 25, 10)
    hidden, other = split_hidden(cnn.parameters())
    assert hidden == [cnn.conv2.weight, cnn.conv3.weight]
    assert len(hidden) + len(other) == len(list(cnn.parameters()))
    assert {id(cnn.conv1.weight), id(cnn.linear.weight)} <= {id(p) for p in other}
    # two weight layers are an input and an output layer: nothing for Muon
    with pytest.raises(ConfigError, match=r"no hidden weight matrices .* go to AdamW"):
        muon_with_adamw(MLP(8, (6,), 3).parameters())
    with pytest.raises(ConfigError, match=r"Muon: a parameter of shape \(4,\)"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def steps_of(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: list) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()


def test_muon_is_torch_muon_and_takes_kernels_as_matrices() -> None:
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(8, 5, generator=g), torch.randn(3, 9, generator=g)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(6)]
    options = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    theirs = [torch.nn.Parameter(w.clone()) for w in weights]
    steps_of(Muon(ours, **options), ours, grads)
    steps_of(torch.optim.Muon(theirs, **options), theirs, grads)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)  # bit for bit on 2-D weights
    assert Muon(ours).defaults == torch.optim.Muon(theirs).defaults  # torch's defaults
    # a conv kernel (out, in, k) is updated as the matrix (out, in * k), in place
    kernel = torch.randn(6, 4, 3, generator=g)
    kernel_grads = [[torch.randn_like(kernel)] for _ in range(6)]
    conv = torch.nn.Parameter(kernel.clone())
    storage = conv.data_ptr()
    flat = torch.nn.Parameter(kernel.reshape(6, 12).clone())
    opt = Muon([conv], **options)
    steps_of(opt, [conv], kernel_grads)
    steps_of(
        torch.optim.Muon([flat], **options), [flat], [[s[0].reshape(6, 12)] for s in kernel_grads]
    )
    assert conv.data_ptr() == storage and torch.equal(conv.reshape(6, 12), flat)
    assert opt.state[conv]["momentum_buffer"].shape == conv.shape
    # a channels-last 2-D conv kernel: its columns in memory order, the same update to rounding
    kernel4 = torch.randn(8, 3, 3, 3, generator=g)
    grads4 = [[torch.randn_like(kernel4)] for _ in range(4)]
    plain = torch.nn.Parameter(kernel4.clone())
    last = torch.nn.Parameter(kernel4.clone().to(memory_format=torch.channels_last))
    steps_of(Muon([plain], **options), [plain], grads4)
    steps_of(
        Muon([last], **options),
        [last],
        [[s[0].to(memory_format=torch.channels_last)] for s in grads4],
    )
    assert last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last, plain, rtol=0, atol=0.05 * 0.05)  # bf16 Newton-Schulz


# --- the composite optimizer: checkpoints ------------------------------------------------------


def saved(obj: object) -> object:
    """A deep copy through torch.save / torch.load, as a checkpoint would be."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def schedulers(training: Training) -> list:
    """The schedulers behind a Training's hooks: bound ``step`` methods, or closures."""
    found = []
    for hook in training.after_step + training.after_epoch:
        owner = getattr(hook, "__self__", None)
        cells = [c.cell_contents for c in getattr(hook, "__closure__", None) or ()]
        found.append(owner or next(c for c in cells if hasattr(c, "state_dict")))
    return found


def marked(name: str) -> object:
    """``name`` as a test parameter, skipped (outside CI) when its package is missing."""
    marks = [needs_lion] if "lion" in name else [needs_schedulefree] if "schedule" in name else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize(
    "name", [marked(n) for n in ("muon+lr-cosine", "demon-muon", "demon-lion", "lion+lr-step")]
)
def test_stop_save_load_continue_equals_the_uninterrupted_run(name: str) -> None:
    total, stop = 24, 10
    config = {"lr": 0.01} if "muon" in name else {"lr": 1e-3, "weight_decay": 0.1}
    model = mlp()
    training = build(name, model, total, **config)
    whole = train(model, training, range(total))
    final = [p.detach().clone() for p in model.parameters()]

    first = mlp()
    before = build(name, first, total, **config)
    train(first, before, range(stop))
    checkpoint = saved(
        {
            "model": first.state_dict(),
            "optimizer": before.optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in schedulers(before)],
        }
    )
    resumed = mlp()
    resumed.load_state_dict(checkpoint["model"])
    after = build(name, resumed, total, **config)
    after.optimizer.load_state_dict(checkpoint["optimizer"])
    for scheduler, state in zip(schedulers(after), checkpoint["schedulers"], strict=True):
        scheduler.load_state_dict(state)
    rest = train(resumed, after, range(stop, total))
    assert rest == whole[stop:]
    for a, b in zip(resumed.parameters(), final, strict=True):
        assert torch.equal(a, b)


def test_composite_state_dict_is_checked_and_loaded_all_or_nothing() -> None:
    model = mlp()
    training = build("demon-muon", model, 10)
    train(model, training, range(3))
    composite = training.optimizer
    before = copy.deepcopy(composite.state_dict())
    assert [list(part) for part in before["optimizers"]] == [["state", "param_groups"]] * 2
    with pytest.raises(ConfigError, match=r"state_dict: got .*allowed: a CompositeOptimizer"):
        composite.load_state_dict(torch.optim.SGD(model.parameters()).state_dict())
    bad = copy.deepcopy(before)
    bad["optimizers"][0]["state"][0]["momentum_buffer"] += 1.0  # loads...
    del bad["optimizers"][1]["param_groups"][0]["params"][0]  # ...but this part is refused
    with pytest.raises(ValueError, match="doesn't match the size"):
        composite.load_state_dict(bad)
    now = composite.state_dict()
    assert torch.equal(
        now["optimizers"][0]["state"][0]["momentum_buffer"],
        before["optimizers"][0]["state"][0]["momentum_buffer"],
    )
    linked = [g for o in composite.optimizers for g in o.param_groups]
    assert all(a is b for a, b in zip(composite.param_groups, linked, strict=True))
    with pytest.raises(ConfigError, match="add the group to one of the optimizers"):
        composite.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, 2))]})
    shared = torch.nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(ConfigError, match=r"optimizers\[1\]: a parameter of shape \(3, 3\)"):
        CompositeOptimizer([torch.optim.SGD([shared]), torch.optim.Adam([shared])])
    with pytest.raises(ConfigError, match="optimizers: got"):
        CompositeOptimizer([])
    twin = copy.deepcopy(composite)  # a copy steps on its own
    assert twin.optimizers[0] is not composite.optimizers[0]
    assert twin.param_groups[0] is twin.optimizers[0].param_groups[0]
    assert len(twin.state) == len(composite.state) > 0


# --- Demon on Muon and Lion -------------------------------------------------------------------


def test_demon_moves_muons_momentum_and_lions_beta1_only() -> None:
    total = 12
    model = mlp()
    training = build("demon-muon", model, total, lr=0.01)
    muon, adamw = training.optimizer.optimizers
    applied = []
    x, y = data()
    for _ in range(total):
        applied.append((muon.param_groups[0]["momentum"], adamw.param_groups[0]["betas"]))
        training.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        training.optimizer.step()
        for hook in training.after_step:
            hook()
    for k, (momentum, betas) in enumerate(applied):
        assert momentum == pytest.approx(schedules.demon(k, total, 0.95), rel=1e-12)
        assert betas == (0.9, 0.999)
    assert muon.param_groups[0]["momentum"] == 0.0  # at T

    model = mlp()
    cosine = build("muon+lr-cosine", model, total, lr=0.02, adamw_lr=1e-3)
    for k in range(total):  # the LR schedule moves both optimizers' lr, from their own
        lrs = [g["lr"] for g in cosine.optimizer.param_groups]
        assert lrs[0] == pytest.approx(schedules.cosine(k, total, 0.02), rel=1e-9, abs=1e-15)
        assert lrs[-1] == pytest.approx(schedules.cosine(k, total, 1e-3), rel=1e-9, abs=1e-15)
        assert cosine.optimizer.param_groups[0]["momentum"] == 0.95
        train(model, cosine, range(k, k + 1))


@needs_lion
def test_lion_follows_its_equations_in_float64_and_demon_moves_beta1() -> None:
    """Lion, Chen et al. 2023, Algorithm 2, written here in numpy: with g the gradient,
    c = b1 m + (1 - b1) g; p <- p - lr (sign(c) + wd p); m <- b2 m + (1 - b2) g."""
    total, lr, wd, b2 = 40, 1e-2, 0.5, 0.99
    rng = np.random.default_rng(0)
    curvature, target = rng.uniform(0.5, 2.0, 7), rng.normal(size=7)
    noise = rng.normal(scale=0.3, size=(total, 7))

    def grad(p: np.ndarray, k: int) -> np.ndarray:
        return curvature * (p - target) + noise[k]

    for name, beta1 in (("lion", lambda k: 0.9), ("demon-lion", None)):
        param = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
        method = get_method(name)
        config = {**method.grid()[0], "lr": lr, "weight_decay": wd}
        training = method.build([param], config, Budget(1, total))
        p, m, betas = np.zeros(7), np.zeros(7), []
        for k in range(total):
            betas.append(training.optimizer.param_groups[0]["betas"])
            param.grad = torch.from_numpy(grad(param.detach().numpy(), k))
            training.optimizer.step()
            for hook in training.after_step:
                hook()
            b1 = beta1(k) if beta1 is not None else schedules.demon(k, total, 0.9)
            g = grad(p, k)
            c = b1 * m + (1 - b1) * g
            p = p - lr * (np.sign(c) + wd * p)
            m = b2 * m + (1 - b2) * g
            np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-12, atol=1e-15)
        assert all(b[1] == b2 for b in betas)
        if name == "demon-lion":
            assert [b[0] for b in betas] == pytest.approx(
                [schedules.demon(k, total, 0.9) for k in range(total)], rel=1e-12
            )


# --- Schedule-Free: evaluation at its average --------------------------------------------------


@needs_mnist1d
def test_eval_hooks_run_around_every_evaluation(restore_registries: None) -> None:
    log: list[str] = []

    def build_logged(params: object, *, budget: Budget, lr: float) -> Training:
        opt = torch.optim.SGD(params, lr=lr)  # type: ignore[arg-type]
        return Training(
            opt,
            before_eval=[lambda: log.append("before")],
            after_eval=[lambda: log.append("after")],
        )

    register_method("logged-sgd", build=build_logged, grid={"lr": 0.1})
    task = get_task("mnist1d-mlp")
    evaluate = task.evaluate_metrics

    def logged(model: torch.nn.Module, split: object) -> dict[str, float]:
        log.append("eval")
        return evaluate(model, split)

    task.evaluate_metrics = logged  # type: ignore[method-assign]
    try:
        result = run_trial(
            TrialSpec("mnist1d-mlp", "logged-sgd", (("lr", 0.1),), 0, 2, 500),
            task.load_data(),
            task,
        )
    finally:
        del task.evaluate_metrics
    assert result.status == "done", result.traceback
    assert log == ["before", "eval", "after"] * 3  # 2 validations, then the test
    with pytest.raises(ConfigError, match=r"Training.before_eval\[0\]: got 1"):
        Training(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), before_eval=[1])  # type: ignore[list-item]


@needs_mnist1d
@needs_schedulefree
def test_schedule_free_is_evaluated_at_its_average_and_trains_at_its_iterate(
    restore_registries: None,
) -> None:
    """Schedule-Free keeps z (the base sequence) and trains at y = (1 - b) z + b x, where x is
    the average it is evaluated at: during every evaluation the model holds x (computed
    back from the y of the last step), and training continues from y."""
    base = get_method("schedulefree-adamw")
    seen: dict[str, object] = {}

    def build_watched(params: object, *, budget: Budget, **hp: object) -> Training:
        training = base.build_fn(params, budget=budget, **hp)
        model_params = [p for g in training.optimizer.param_groups for p in g["params"]]

        def snapshot() -> None:
            seen["y"] = [p.detach().clone() for p in model_params]

        seen["training"], seen["params"] = training, model_params
        return Training(
            training.optimizer,
            (*training.after_step, snapshot),
            training.after_epoch,
            training.before_eval,
            training.after_eval,
        )

    register_method("watched-schedulefree", build=build_watched, grid=dict(base.hyperparameters))
    task = get_task("mnist1d-mlp")
    evaluate = task.evaluate_metrics
    checks: list[float] = []

    def at_average(model: torch.nn.Module, split: object) -> dict[str, float]:
        opt: torch.optim.Optimizer = seen["training"].optimizer  # type: ignore[attr-defined]
        assert all(not g["train_mode"] for g in opt.param_groups)
        for p, y in zip(seen["params"], seen["y"], strict=True):  # type: ignore[call-overload]
            z = opt.state[p]["z"]
            x = (y - 0.1 * z) / 0.9  # y = 0.1 z + 0.9 x
            torch.testing.assert_close(p.detach(), x, rtol=1e-4, atol=1e-5)
            checks.append(float((p.detach() - y).abs().max()))
        return evaluate(model, split)

    task.evaluate_metrics = at_average  # type: ignore[method-assign]
    config = (
        ("lr", 3e-3),
        ("momentum", 0.9),
        ("beta2", 0.999),
        ("weight_decay", 0.0),
        ("warmup", 0.02),
    )
    try:
        result = run_trial(
            TrialSpec("mnist1d-mlp", "watched-schedulefree", config, 0, 3, 100),
            task.load_data(),
            task,
        )
    finally:
        del task.evaluate_metrics
    assert result.status == "done", result.traceback
    assert len(checks) == 4 * len(seen["params"])  # type: ignore[arg-type]
    assert min(checks) > 0  # x is not y: the weights were moved for evaluation
    opt = seen["training"].optimizer  # type: ignore[attr-defined]
    assert all(g["train_mode"] for g in opt.param_groups)  # and moved back after
    # the recorded lr is the one its warm-up applied (here past the warm-up: lr itself)
    assert [h["lr"] for h in result.history] == [3e-3] * 3


# --- an interrupted study resumes to the same results ------------------------------------------


class InterruptedExecutor:
    """In-process trials, then Ctrl-C after the first result (as test_executor's)."""

    workers = 1

    def map_unordered(self, specs: Sequence[TrialSpec]) -> Iterator[TrialResult]:
        for i, result in enumerate(LocalExecutor(1).map_unordered(specs)):
            if i == 1:
                raise KeyboardInterrupt
            yield result


def outcome(store: ResultStore) -> dict[str, tuple]:
    """Each stored trial's numbers (its history without the wall-clock times)."""
    return {
        row["trial_id"]: (
            row["status"],
            row["val_metric"],
            row["test_metric"],
            [
                {k: v for k, v in h.items() if k not in ("elapsed_s", "train_s")}
                for h in row["history"]
            ],
        )
        for row in store.rows()
    }


@needs_mnist1d
@needs_lion
@needs_schedulefree
def test_an_interrupted_study_of_the_baselines_resumes_to_the_same_results(
    tmp_path: pathlib.Path,
) -> None:
    configs = {
        "demon-muon": {"lr": 0.03},
        "muon+lr-cosine": {"lr": 0.03},
        "demon-lion": {"lr": 3e-4},
        "schedulefree-adamw": {"lr": 3e-3},
    }
    specs = [
        TrialSpec(
            "mnist1d-mlp", name, tuple({**get_method(name).grid()[0], **c}.items()), 0, 2, 100
        )
        for name, c in configs.items()
    ]
    with ResultStore(tmp_path / "whole.sqlite") as store:
        whole = run_study(specs, store, LocalExecutor(1))
        assert whole.counts == {"done": 4}
        expected = outcome(store)
    with ResultStore(tmp_path / "resumed.sqlite") as store:
        first = run_study(specs, store, InterruptedExecutor())
        assert first.interrupted and first.written == 1
        second = run_study(specs, store, LocalExecutor(2))  # the rest, in worker processes
        assert second.skipped == 1 and second.written == 3
        assert outcome(store) == expected


# --- missing packages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("lion_pytorch", ["lion", "lion+lr-cosine", "demon-lion"]),
        ("schedulefree", ["schedulefree-adamw"]),
    ],
)
def test_a_missing_package_is_a_one_line_error_with_the_install_command(
    module: str, names: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
    for name in names:
        message = f"method {name}: needs the package {module}, which is not installed: {INSTALL}"
        with pytest.raises(ConfigError) as caught:
            get_method(name).check_installed()
        assert str(caught.value) == message
        with pytest.raises(ConfigError, match="which is not installed"):
            build(name, mlp(), 5)
    # a study stops before any training, and before it creates its store
    from demon_optim.study.runner import run

    study = {
        "name": "x",
        "tasks": ["mnist1d-mlp"],
        "methods": ["adam", names[0]],
        "seeds": [0],
        "epochs": 1,
    }
    with pytest.raises(ConfigError, match=f"method {names[0]}: needs the package {module}"):
        run(study, store=tmp_path / "x.sqlite", workers=1)
    assert not (tmp_path / "x.sqlite").exists()
    get_method("muon").check_installed()  # torch's own: nothing to install


@pytest.mark.parametrize("name", [marked(n) for n in BASELINES])
def test_every_baseline_builds_and_trains_a_few_steps(name: str) -> None:
    model = mlp()
    training = build(name, model, 8, lr=0.01 if "muon" in name else 1e-3)
    for hook in training.before_eval + training.after_eval:  # an evaluation in between
        hook()
    losses = train(model, training, range(8))
    for hook in training.after_epoch:
        hook(0.5)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) < sum(losses[:4]), losses  # the same 4 batches, twice
