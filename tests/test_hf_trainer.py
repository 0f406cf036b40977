"""The Hugging Face Trainer integration: T from the Trainer, resume, logs, errors.

Every run is a tiny MLP on the CPU for a handful of optimizer steps (a Trainer run costs
about 0.3 s here); the momentum each optimizer step used is recorded by a callback.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pathlib
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from demon_optim import ConfigError, DemonAdam, DemonSGD, schedules
from tests.conftest import requires

pytestmark = [
    requires("transformers", "(the Hugging Face Trainer integration)"),
    requires("accelerate", "(the Hugging Face Trainer needs it)"),
]

ROOT = pathlib.Path(__file__).resolve().parent.parent
N, BATCH = 10, 3  # 4 batches an epoch, the last one short


@pytest.fixture(scope="module")
def hf() -> Iterator[Any]:
    """The integration module, with transformers' info logs off and one torch thread (the
    tiny steps only slow down on more, on a shared machine)."""
    import transformers

    verbosity, threads = transformers.logging.get_verbosity(), torch.get_num_threads()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    yield importlib.import_module("demon_optim.integrations.transformers")
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


class TinyRegressor(torch.nn.Module):
    """Any nn.Module whose forward returns a dict with the loss trains under the Trainer."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x).squeeze(-1), labels)}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = N) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x.sum(dim=1) + 0.1 * torch.randn(n, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def recorder(hf: Any) -> Any:
    """A callback that records, per optimizer step, k and the momentum the step used."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[tuple[int, float]] = []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            inner = hf.unwrap_optimizer(optimizer)
            group = inner.param_groups[0]
            if isinstance(inner, (DemonSGD, DemonAdam)):
                k = group["schedule_step"]
                beta = inner.scheduled_beta(group, inner._beta_init(group), k)
            else:  # the callback's MomentumScheduler has set this step's momentum
                k = group[hf.SCHEDULER_STATE_KEY]["last_step"]
                beta = group["betas"][0]
            self.steps.append((k, beta))

    return Recorder()


def train(
    output_dir: pathlib.Path,
    callbacks: list[Any],
    optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
    lr_scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None,
    resume: pathlib.Path | None = None,
    n: int = N,
    expect_warning: str | None = None,
    **arguments: Any,
) -> tuple[Any, TinyRegressor]:
    """A Trainer run; ``optimizer=None`` is the Trainer's own AdamW. No schedule warning
    (past T, a T of the optimizer's own) is raised unless ``expect_warning`` matches it."""
    from transformers import Trainer, TrainingArguments

    model = TinyRegressor()
    settings = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "report_to": [],
        "disable_tqdm": True,
        "per_device_train_batch_size": BATCH,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        **arguments,
    }
    args = TrainingArguments(**settings)
    opt = optimizer(model) if optimizer is not None else None
    sched = lr_scheduler(opt, args.max_steps) if lr_scheduler is not None else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Pairs(n),
        callbacks=callbacks,
        optimizers=(opt, sched),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    schedule_warnings = [str(w.message) for w in caught if "total_steps" in str(w.message)]
    if expect_warning is None:
        assert schedule_warnings == [], schedule_warnings  # never past T, never a foreign T
    else:
        assert len(schedule_warnings) == 1 and re.search(expect_warning, schedule_warnings[0])
    return trainer, model


def demon_sgd(model: torch.nn.Module) -> DemonSGD:
    return DemonSGD(model.parameters(), lr=1e-2, momentum=0.9)


def demon_adam(model: torch.nn.Module) -> DemonAdam:
    return DemonAdam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))


def expected_total_steps(
    epochs: float, accumulation: int, drop_last: bool, max_steps: int = -1
) -> int:
    """The Trainer's T, from the formula in docs/integrations.md."""
    if max_steps > 0:
        return max_steps
    batches = N // BATCH if drop_last else math.ceil(N / BATCH)
    return math.ceil(epochs * math.ceil(batches / accumulation))


# --- T from the Trainer: the last optimizer step applies k = T - 1 -------------------------

CONFIGS = [
    pytest.param({"max_steps": 7}, id="max_steps"),
    pytest.param({"max_steps": 5, "gradient_accumulation_steps": 2}, id="max_steps-accumulated"),
    pytest.param(
        {"num_train_epochs": 2, "gradient_accumulation_steps": 3}, id="epochs-accumulated"
    ),
    pytest.param({"num_train_epochs": 2, "dataloader_drop_last": True}, id="epochs-drop_last"),
    pytest.param(
        {"num_train_epochs": 2, "gradient_accumulation_steps": 3, "dataloader_drop_last": True},
        id="epochs-accumulated-drop_last",
    ),
    pytest.param({"num_train_epochs": 1.3}, id="fractional-epochs"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_last_optimizer_step_applies_k_equal_T_minus_1(
    hf: Any, tmp_path: pathlib.Path, config: dict[str, Any]
) -> None:
    callback, record = hf.DemonCallback(), recorder(hf)
    trainer, _ = train(tmp_path, [callback, record], optimizer=demon_sgd, **config)
    total = expected_total_steps(
        config.get("num_train_epochs", 3),
        config.get("gradient_accumulation_steps", 1),
        config.get("dataloader_drop_last", False),
        config.get("max_steps", -1),
    )
    assert callback.total_steps == trainer.state.max_steps == total
    assert trainer.state.global_step == total
    assert [k for k, _ in record.steps] == list(range(total))  # one k per optimizer step
    assert [beta for _, beta in record.steps] == [
        schedules.demon(k, total, 0.9) for k in range(total)
    ]
    assert isinstance(callback.optimizer, DemonSGD)  # accelerate's wrapper taken off
    assert callback.optimizer.param_groups[0]["total_steps"] == total


def test_a_momentum_schedule_on_the_trainers_adamw(hf: Any, tmp_path: pathlib.Path) -> None:
    callback, record = hf.DemonCallback(schedule="demon"), recorder(hf)
    config = {"num_train_epochs": 2, "gradient_accumulation_steps": 3}
    trainer, _ = train(tmp_path, [callback, record], **config)
    total = expected_total_steps(2, 3, False)
    assert type(callback.optimizer) is torch.optim.AdamW  # the Trainer's default optimizer
    groups = callback.optimizer.param_groups  # with weight decay and without
    assert callback.momentum_scheduler.total_steps == [total] * len(groups) == [total, total]
    assert record.steps == [(k, schedules.demon(k, total, 0.9)) for k in range(total)]
    assert [g["betas"] for g in groups] == [(0.0, 0.999)] * 2  # k = T: the end
    assert trainer.state.global_step == total


def test_schedule_options_reach_the_scheduler(hf: Any, tmp_path: pathlib.Path) -> None:
    callback, record = hf.DemonCallback(schedule="demon", delay=0.5), recorder(hf)
    train(tmp_path, [callback, record], max_steps=6)
    assert [beta for _, beta in record.steps] == [
        schedules.demon(k, 6, 0.9, delay=0.5) for k in range(6)
    ]


# --- resume from a Trainer checkpoint equals the uninterrupted run ------------------------


def linear_warmup(optimizer: torch.optim.Optimizer, total: int) -> Any:
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=total)


RESUMABLE = [
    pytest.param(demon_adam, linear_warmup, {}, id="DemonAdam+get_linear_schedule_with_warmup"),
    pytest.param(demon_adam, None, {}, id="DemonAdam+the-Trainer's-linear-schedule"),
    pytest.param(None, None, {"schedule": "demon"}, id="AdamW+MomentumScheduler"),
]


@pytest.mark.parametrize(("optimizer", "lr_scheduler", "options"), RESUMABLE)
def test_resume_mid_schedule_equals_the_uninterrupted_run(
    hf: Any, tmp_path: pathlib.Path, optimizer: Any, lr_scheduler: Any, options: dict[str, Any]
) -> None:
    common = {"max_steps": 8, "save_strategy": "steps", "save_steps": 4, "warmup_steps": 2}
    full, full_model = train(
        tmp_path / "full",
        [hf.DemonCallback(**options)],
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        **common,
    )
    record = recorder(hf)
    resumed, resumed_model = train(
        tmp_path / "elsewhere",  # the checkpoint is found from the Trainer, not from output_dir
        [hf.DemonCallback(**options), record],
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        resume=tmp_path / "full" / "checkpoint-4",
        **common,
    )
    assert [k for k, _ in record.steps] == [4, 5, 6, 7]  # continued, not restarted
    for a, b in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    history = [(e["step"], e["learning_rate"], e["momentum"]) for e in full.state.log_history[:-1]]
    assert [
        (e["step"], e["learning_rate"], e["momentum"]) for e in resumed.state.log_history[:-1]
    ] == history
    # the Trainer's linear warm-up and decay over the same T as the momentum
    lrs = [1e-2 * s / 2 for s in (0, 1)] + [1e-2 * (8 - s) / 6 for s in range(2, 8)]
    assert [lr for _, lr, _ in history] == pytest.approx(lrs, rel=1e-12)
    assert [m for _, _, m in history] == [schedules.demon(k, 8, 0.9) for k in range(8)]


def test_a_resumed_run_with_another_max_steps_needs_allow_change(
    hf: Any, tmp_path: pathlib.Path
) -> None:
    common = {"save_strategy": "steps", "save_steps": 3}
    train(tmp_path / "first", [hf.DemonCallback()], optimizer=demon_adam, max_steps=6, **common)
    checkpoint = tmp_path / "first" / "checkpoint-3"
    with pytest.raises(ConfigError, match=r"max_steps=9 is not the T in use.*allow_change=True"):
        train(tmp_path / "second", [hf.DemonCallback()], demon_adam, resume=checkpoint, max_steps=9)
    record = recorder(hf)
    callback = hf.DemonCallback(allow_change=True)
    train(tmp_path / "third", [callback, record], demon_adam, resume=checkpoint, max_steps=9)
    assert callback.optimizer.param_groups[0]["total_steps"] == 9
    assert record.steps == [(k, schedules.demon(k, 9, 0.9)) for k in range(3, 9)]


def test_a_checkpoint_with_another_schedule_is_refused(hf: Any, tmp_path: pathlib.Path) -> None:
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    train(tmp_path / "first", [hf.DemonCallback(schedule="linear")], **common)
    with pytest.raises(ConfigError, match="'linear', the schedule this run's checkpoint"):
        train(
            tmp_path / "second",
            [hf.DemonCallback(schedule="demon")],
            resume=tmp_path / "first" / "checkpoint-2",
            **common,
        )


def test_a_checkpoint_written_without_the_callback_starts_the_schedule_where_the_run_is(
    hf: Any, tmp_path: pathlib.Path
) -> None:
    common = {"max_steps": 6, "save_strategy": "steps", "save_steps": 3}
    train(tmp_path / "plain", [], **common)  # the Trainer's AdamW, no momentum schedule
    record = recorder(hf)
    train(
        tmp_path / "scheduled",
        [hf.DemonCallback(schedule="demon"), record],
        resume=tmp_path / "plain" / "checkpoint-3",
        **common,
    )
    assert record.steps == [(k, schedules.demon(k, 6, 0.9)) for k in range(3, 6)]


def test_a_step_the_scaler_skipped_does_not_advance_the_schedule(hf: Any) -> None:
    from transformers import TrainerControl, TrainerState

    class Wrapped:  # what accelerate's AcceleratedOptimizer exposes
        def __init__(self, optimizer: torch.optim.Optimizer) -> None:
            self.optimizer, self.step_was_skipped = optimizer, False

    adamw = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 0.999))
    wrapped, state, control = Wrapped(adamw), TrainerState(max_steps=5), TrainerControl()
    callback = hf.DemonCallback(schedule="demon")
    callback.on_train_begin(None, state, control, optimizer=wrapped)
    assert callback.optimizer is adamw
    for skipped in (False, True, True, False):
        wrapped.step_was_skipped = skipped
        callback.on_step_end(None, state, control, optimizer=wrapped)
    assert callback.momentum_scheduler.last_step == 2
    assert adamw.param_groups[0][hf.SCHEDULER_STATE_KEY]["last_step"] == 2
    assert adamw.param_groups[0]["betas"] == (schedules.demon(2, 5, 0.9), 0.999)


# --- momentum in the logs -----------------------------------------------------------------


def test_momentum_is_logged_beside_the_learning_rate(hf: Any, tmp_path: pathlib.Path) -> None:
    from transformers import TrainerCallback

    class Logger(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict[str, float]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    before, after, record = Logger(), Logger(), recorder(hf)
    trainer, _ = train(
        tmp_path,
        [before, hf.DemonCallback(), after, record],
        demon_adam,
        max_steps=6,
        logging_steps=2,
    )
    momenta = [beta for _, beta in record.steps]
    training = [e for e in trainer.state.log_history if "learning_rate" in e]
    assert [e["step"] for e in training] == [2, 4, 6]
    assert [e["momentum"] for e in training] == [momenta[1], momenta[3], momenta[5]]
    assert [e["momentum"] for e in after.logs if "learning_rate" in e] == [
        momenta[1],
        momenta[3],
        momenta[5],
    ]
    # the Trainer hands a log to the callbacks in order: one given before sees no momentum
    assert not any("momentum" in e for e in before.logs)
    assert "momentum" not in trainer.state.log_history[-1]  # the run's summary has none


def test_log_momentum_false_logs_nothing(hf: Any, tmp_path: pathlib.Path) -> None:
    trainer, _ = train(tmp_path, [hf.DemonCallback(log_momentum=False)], demon_sgd, max_steps=2)
    assert not any("momentum" in e for e in trainer.state.log_history)


# --- errors --------------------------------------------------------------------------------


def test_a_demon_optimizer_needs_no_schedule(hf: Any, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"schedule: got 'demon'; allowed: None for a DemonAdam"):
        train(tmp_path, [hf.DemonCallback(schedule="demon")], demon_adam, max_steps=2)


def test_another_optimizer_needs_a_schedule(hf: Any, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"AdamW has no momentum schedule.*schedule='demon'"):
        train(tmp_path, [hf.DemonCallback()], max_steps=2)


def test_a_group_with_its_own_total_steps_keeps_it_and_is_warned_about(
    hf: Any, tmp_path: pathlib.Path
) -> None:
    def own_t(model: torch.nn.Module) -> DemonSGD:
        first, *rest = model.parameters()
        groups = [{"params": [first], "total_steps": 50}, {"params": rest}]
        return DemonSGD(groups, lr=1e-2, total_steps=20)  # the constructor's T is a default

    callback = hf.DemonCallback()
    warned = r"max_steps is 3, but param_groups\[0\] keeps its total_steps=50"
    train(tmp_path, [callback], own_t, max_steps=3, expect_warning=warned)
    assert [g["total_steps"] for g in callback.optimizer.param_groups] == [50, 3]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schedule": "demonic"}, "schedule"),
        ({"schedule": "demon", "dealy": 0.5}, "'demon' schedule options"),
        ({"key": "betas"}, "schedule"),
        ({"delay": 0.5}, "schedule"),
        ({"allow_change": "yes"}, "allow_change"),
        ({"schedule": "demon", "key": 0}, "key"),
    ],
)
def test_bad_arguments_are_refused_at_construction(
    hf: Any, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: got"):
        hf.DemonCallback(**kwargs)


@pytest.mark.parametrize("missing", ["transformers", "accelerate"])
def test_a_missing_dependency_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "demon_optim.integrations.transformers", raising=False)
    with pytest.raises(ImportError) as error:
        importlib.import_module("demon_optim.integrations.transformers")
    message = str(error.value)
    assert "\n" not in message
    assert missing in message
    assert message.endswith("install them with: pip install 'demon-optim[transformers]'")


# --- the documented example -----------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "hf_trainer_demon.py"


def test_the_doc_shows_the_example_file_verbatim() -> None:
    doc = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    section = doc.split("## Hugging Face Trainer", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks == [EXAMPLE.read_text(encoding="utf-8")]


def test_the_example_runs_the_schedule_to_its_end(hf: Any, tmp_path: pathlib.Path) -> None:
    spec = importlib.util.spec_from_file_location("hf_trainer_demon", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no past-T warning
        trainer = example.main(str(tmp_path))
    total = trainer.state.max_steps
    assert total == 8 * math.ceil(math.ceil(250 / 16) / 3) == 48
    logged = [e for e in trainer.state.log_history if "momentum" in e]
    assert [e["step"] for e in logged] == list(range(8, 49, 8))
    assert [e["momentum"] for e in logged] == [
        schedules.demon(s - 1, 48, 0.9) for s in range(8, 49, 8)
    ]
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-24", "checkpoint-48"]
