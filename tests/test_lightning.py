"""DemonCallback: PyTorch Lightning runs give the Demon schedules the run's length.

Each configuration's ``T`` is worked out here from the trainer's settings (not read back from
Lightning) and checked against what the run did: the schedule step ``k`` of every optimizer
step, recorded by a step hook, must be exactly ``0 .. T-1`` with no past-total_steps warning.
A real 2-process DDP run (tests/lightning_ddp.py) does the same. Resuming from Lightning's
own checkpoint must give the parameters of the uninterrupted run bit for bit.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from demon_optim import ConfigError, DemonAdam, DemonSGD, MomentumScheduler, schedules
from tests.conftest import requires

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL = 'pip install "demon-optim[lightning]"'
HAS_LIGHTNING = importlib.util.find_spec("lightning") is not None
LIGHTNING = requires("lightning", f"({INSTALL})")

if HAS_LIGHTNING:
    import lightning.pytorch as pl

    from demon_optim.integrations.lightning import DemonCallback, demon_optimizers, unwrap

    Base: type = pl.LightningModule
else:  # the tests that need Lightning are skipped
    Base = torch.nn.Module

# Lightning's advice for real runs, noise for 10-batch ones
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval"),
    pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\)"),
]

SAMPLES, BATCH = 40, 4  # 10 batches per epoch


def loader(samples: int = SAMPLES, batch: int = BATCH) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 3, generator=gen)
    data = torch.utils.data.TensorDataset(x, x.sin().sum(1, keepdim=True))
    return torch.utils.data.DataLoader(data, batch_size=batch)  # the same order every run


def demon_adam(params: Any) -> torch.optim.Optimizer:
    return DemonAdam(params, lr=1e-2)


class Regression(Base):
    """A small MLP; ``steps`` gets the schedule step k each optimizer step applied and
    ``momenta`` the momentum it applied (a step pre-hook reads the group for a torch
    optimizer driven by a MomentumScheduler)."""

    def __init__(
        self,
        make_optimizer: Callable[[Any], torch.optim.Optimizer] = demon_adam,
        scheduled: bool = False,
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )
        self.make_optimizer, self.scheduled = make_optimizer, scheduled
        self.steps: list[int] = []
        self.momenta: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.parameters())
        if self.scheduled:
            self.momentum_scheduler = MomentumScheduler(optimizer, "demon")
            optimizer.register_step_pre_hook(self._record_scheduled)
        elif "schedule_step" in optimizer.param_groups[0]:  # a Demon optimizer
            optimizer.register_step_post_hook(self._record_demon)
        return optimizer

    def _record_demon(self, optimizer: Any, *_: Any) -> None:
        self.steps.append(optimizer.param_groups[0]["schedule_step"] - 1)
        self.momenta.append(optimizer.get_last_momentum()[0])

    def _record_scheduled(self, optimizer: Any, *_: Any) -> None:
        self.steps.append(self.momentum_scheduler.last_step)
        self.momenta.append(optimizer.param_groups[0]["momentum"])


def trainer(*callbacks: Any, demon: Any = None, **options: Any) -> pl.Trainer:
    settings: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": 2,
        **options,
    }
    return pl.Trainer(callbacks=[demon or DemonCallback(), *callbacks], **settings)


def fit(run: pl.Trainer, model: Any, data: Any = None, **options: Any) -> list[str]:
    """Fit; return the warnings that mention total_steps."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.fit(model, data if data is not None else loader(), **options)
    return [str(w.message) for w in caught if "total_steps" in str(w.message)]


def demon_callback(run: pl.Trainer) -> DemonCallback:
    return next(cb for cb in run.callbacks if isinstance(cb, DemonCallback))


# --- T: the trainer's number of optimizer steps -------------------------------------------------

PER_EPOCH = SAMPLES // BATCH  # 10

CONFIGURATIONS = [
    pytest.param({"max_epochs": 3}, 3 * PER_EPOCH, id="max_epochs"),
    # the last, partial accumulation of an epoch steps too: ceil(10 / 4) = 3 per epoch
    pytest.param({"accumulate_grad_batches": 4}, 2 * math.ceil(PER_EPOCH / 4), id="accumulate"),
    pytest.param({"max_epochs": None, "max_steps": 7}, 7, id="max_steps"),
    pytest.param({"max_epochs": 5, "max_steps": 13}, 13, id="max_steps<epochs"),
    pytest.param({"max_epochs": 2, "max_steps": 100}, 2 * PER_EPOCH, id="epochs<max_steps"),
    pytest.param({"limit_train_batches": 4}, 2 * 4, id="limit_int"),
    pytest.param({"limit_train_batches": 0.55}, 2 * 5, id="limit_float"),  # int(10 * 0.55)
    pytest.param(
        {"limit_train_batches": 0.5, "accumulate_grad_batches": 3},
        2 * math.ceil(5 / 3),
        id="limit+accumulate",
    ),
]


@LIGHTNING
@pytest.mark.parametrize(("options", "total"), CONFIGURATIONS)
def test_total_steps_is_the_runs_number_of_optimizer_steps(
    options: dict[str, Any], total: int
) -> None:
    model, run = Regression(), trainer(**options)
    assert fit(run, model) == []  # no past-total_steps warning
    assert demon_callback(run).total_steps == total
    assert run.optimizers[0].param_groups[0]["total_steps"] == total
    assert model.steps == list(range(total))  # k = 0 .. T-1: the last step applies T-1
    assert model.momenta[-1] == schedules.demon(total - 1, total, 0.9)


@LIGHTNING
def test_two_ddp_processes_with_accumulation_end_at_k_equal_t_minus_1(
    tmp_path: pathlib.Path,
) -> None:
    """A real 2-process DDP run (gloo on the CPU), accumulate_grad_batches=4."""
    path = os.pathsep.join(
        filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "lightning_ddp.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = 2 * math.ceil(9 / 4)  # 72 samples / 2 processes / batches of 4, 2 epochs
    for rank in ranks:
        assert rank["world_size"] == 2 and rank["batches_per_epoch"] == 9
        assert rank["total_steps"] == total
        assert rank["steps"] == list(range(total))
        assert rank["warnings"] == []
        assert rank["last_momentum"] == pytest.approx(schedules.demon(total - 1, total, 0.9))
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # DDP kept the replicas equal


@LIGHTNING
def test_the_run_must_be_bounded_when_some_t_is_unset() -> None:
    model, run = Regression(), trainer(max_epochs=-1, max_steps=-1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match=r"max_steps=-1 and max_epochs=-1.*DemonAdam"):
        fit(run, model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert model.steps == []


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            x = torch.randn(BATCH, 3)
            yield x, x.sum(1, keepdim=True)


@LIGHTNING
def test_a_loader_without_length_needs_max_steps() -> None:
    endless = torch.utils.data.DataLoader(Endless(), batch_size=None)
    with pytest.raises(ConfigError, match=r"no length and max_steps=-1"):
        fit(trainer(max_epochs=1), Regression(), endless)
    model = Regression()
    assert fit(trainer(max_epochs=1, max_steps=6), model, endless) == []
    assert model.steps == list(range(6))


class StopAfter(pl.Callback if HAS_LIGHTNING else object):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        trainer.should_stop = trainer.global_step >= self.steps


@LIGHTNING
def test_an_unbounded_run_is_fine_when_every_t_is_given() -> None:
    model = Regression(lambda p: DemonSGD(p, lr=0.1, total_steps=5))
    run = trainer(StopAfter(3), max_epochs=-1, max_steps=-1)
    assert fit(run, model) == []
    assert demon_callback(run).total_steps is None
    assert run.optimizers[0].param_groups[0]["total_steps"] == 5
    assert model.steps == [0, 1, 2]


@LIGHTNING
def test_a_constructor_t_is_replaced_with_a_warning_and_a_groups_own_t_kept() -> None:
    def two_groups(params: Any) -> DemonSGD:
        first, *rest = list(params)
        return DemonSGD([{"params": [first], "total_steps": 7}, {"params": rest}], lr=0.1)

    model = Regression(two_groups)
    run = trainer(max_epochs=1)
    fit(run, model)
    assert [g["total_steps"] for g in run.optimizers[0].param_groups] == [7, PER_EPOCH]

    with pytest.warns(UserWarning, match=r"replaced DemonAdam's total_steps with T=10.*100 -> 10"):
        run = trainer(max_epochs=1)
        run.fit(Regression(lambda p: DemonAdam(p, total_steps=100)), loader())
    assert run.optimizers[0].param_groups[0]["total_steps"] == PER_EPOCH


# --- MomentumScheduler on a torch optimizer ---------------------------------------------------


def sgd(params: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


@LIGHTNING
def test_a_momentum_scheduler_attribute_is_set_stepped_and_logged() -> None:
    model = Regression(sgd, scheduled=True)
    run = trainer(accumulate_grad_batches=2)
    assert fit(run, model) == []
    total = 2 * PER_EPOCH // 2
    scheduler = model.momentum_scheduler
    assert demon_callback(run).schedulers == {"momentum_scheduler": scheduler}
    assert scheduler.total_steps == [total] and scheduler.last_step == total
    assert model.steps == list(range(total))  # stepped once per optimizer step
    assert model.momenta == [schedules.demon(k, total, 0.9) for k in range(total)]
    assert demon_callback(run).momentum == {"momentum": model.momenta[-1]}


class AsLRScheduler(Regression):
    def configure_optimizers(self) -> Any:
        optimizer = sgd(self.parameters())
        scheduler = MomentumScheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step()


@LIGHTNING
def test_a_momentum_scheduler_returned_as_an_lr_scheduler_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"lr_scheduler\[0\].*attribute of the LightningModule"):
        fit(trainer(), AsLRScheduler())


@LIGHTNING
def test_nothing_to_schedule_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="found no Demon optimizer"):
        trainer(max_epochs=1).fit(Regression(sgd), loader())


class Overflow(Regression):
    """Its loss is inf on one batch: AMP's GradScaler skips that optimizer step."""

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if batch_idx == 3 else loss


@LIGHTNING
@pytest.mark.parametrize("scheduled", [False, True], ids=["demon-adam", "sgd+scheduler"])
def test_a_step_the_grad_scaler_skips_advances_no_schedule(scheduled: bool) -> None:
    model = Overflow(sgd if scheduled else demon_adam, scheduled)
    scaler = torch.amp.GradScaler("cpu")  # fp16 autocast on the CPU, to have a GradScaler
    run = trainer(max_epochs=1, plugins=[pl.plugins.MixedPrecision("16-mixed", "cpu", scaler)])
    fit(run, model)
    taken = len(model.steps)
    assert taken < run.global_step == PER_EPOCH  # Lightning counts the skipped steps
    assert model.steps == list(range(taken))  # the schedule does not
    if scheduled:
        assert model.momentum_scheduler.last_step == taken
    else:
        assert run.optimizers[0].param_groups[0]["schedule_step"] == taken


# --- logging ----------------------------------------------------------------------------------


class Captured(pl.loggers.Logger if HAS_LIGHTNING else object):
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "captured"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))


@LIGHTNING
@pytest.mark.parametrize("every", [1, 3])
def test_the_momentum_is_logged_per_group_at_lightnings_logging_steps(every: int) -> None:
    def two_groups(params: Any) -> DemonSGD:
        first, *rest = list(params)
        groups = [{"params": [first]}, {"params": rest, "momentum": 0.5, "name": "head"}]
        return DemonSGD(groups, lr=0.1, momentum=0.9)

    logger = Captured()
    run = trainer(max_epochs=1, logger=logger, log_every_n_steps=every)
    fit(run, Regression(two_groups))
    logged = [(step, m) for step, m in logger.metrics if "momentum/group0" in m]
    steps = [k for k in range(PER_EPOCH) if (k + 1) % every == 0]  # Lightning's logging steps
    assert [step for step, _ in logged] == steps
    for k, (_, metrics) in zip(steps, logged, strict=True):
        assert metrics == {
            "momentum/group0": schedules.demon(k, PER_EPOCH, 0.9),
            "momentum/head": schedules.demon(k, PER_EPOCH, 0.5),
        }


class TwoOptimizers(Regression):
    """Manual optimization: a Demon optimizer per layer, each stepped once per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        first, second = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        first.step()
        second.step()
        first.zero_grad()
        second.zero_grad()

    def configure_optimizers(self) -> Any:
        first = DemonSGD(self.net[0].parameters(), lr=0.1, momentum=0.9)
        second = DemonAdam(self.net[2].parameters(), lr=1e-2, betas=(0.8, 0.999))
        return [first, second]


@LIGHTNING
def test_several_optimizers_under_manual_optimization() -> None:
    model, run = TwoOptimizers(), trainer(max_epochs=1)
    assert fit(run, model) == []
    assert demon_optimizers(run.strategy._lightning_optimizers) == run.optimizers
    for optimizer in run.optimizers:
        assert optimizer.param_groups[0]["total_steps"] == PER_EPOCH
        assert optimizer.param_groups[0]["schedule_step"] == PER_EPOCH
    last = PER_EPOCH - 1
    assert demon_callback(run).momentum == {
        "momentum/optimizer0": schedules.demon(last, PER_EPOCH, 0.9),
        "momentum/optimizer1": schedules.demon(last, PER_EPOCH, 0.8),
    }


@LIGHTNING
def test_unwrap_finds_the_optimizer_inside_lightnings_wrapper() -> None:
    optimizer = DemonSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    wrapped = pl.core.optimizer.LightningOptimizer(optimizer)
    assert isinstance(wrapped, DemonSGD) and wrapped is not optimizer  # it imitates the class
    assert unwrap(wrapped) is optimizer
    assert demon_optimizers([wrapped, torch.optim.SGD(optimizer.param_groups[0]["params"])]) == [
        optimizer
    ]


# --- checkpoints --------------------------------------------------------------------------------

RESUME = {"max_epochs": 4, "accumulate_grad_batches": 2}  # T = 4 * 5 = 20


def checkpointed(folder: pathlib.Path) -> Any:
    return pl.callbacks.ModelCheckpoint(
        dirpath=folder, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True
    )


@LIGHTNING
@pytest.mark.parametrize("scheduled", [False, True], ids=["demon-adam", "sgd+scheduler"])
def test_resuming_from_a_lightning_checkpoint_equals_the_uninterrupted_run(
    tmp_path: pathlib.Path, scheduled: bool
) -> None:
    make = sgd if scheduled else demon_adam
    full = Regression(make, scheduled)
    run = trainer(checkpointed(tmp_path), enable_checkpointing=True, **RESUME)
    assert fit(run, full) == []
    middle = tmp_path / "epoch=1-step=10.ckpt"  # after 10 of the 20 optimizer steps
    assert middle.is_file()

    resumed = Regression(make, scheduled)
    again = trainer(**RESUME)
    assert fit(again, resumed, ckpt_path=middle) == []
    assert resumed.steps == list(range(10, 20))  # the schedule continued from k = 10
    assert resumed.momenta == full.momenta[10:]
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    if scheduled:
        assert resumed.momentum_scheduler.last_step == full.momentum_scheduler.last_step == 20


@LIGHTNING
def test_a_resumed_run_of_another_length_needs_allow_change(tmp_path: pathlib.Path) -> None:
    run = trainer(checkpointed(tmp_path), enable_checkpointing=True, max_epochs=2)
    fit(run, Regression())
    middle = tmp_path / "epoch=0-step=10.ckpt"
    with pytest.raises(ConfigError, match=r"T=30.*20.*DemonCallback\(allow_change=True\)"):
        fit(trainer(max_epochs=3), Regression(), ckpt_path=middle)
    model = Regression()
    run = trainer(max_epochs=3, demon=DemonCallback(allow_change=True))
    fit(run, model, ckpt_path=middle)
    assert model.steps == list(range(10, 30))
    assert run.optimizers[0].param_groups[0]["total_steps"] == 30


@LIGHTNING
def test_the_callbacks_state_is_checked() -> None:
    with pytest.raises(ConfigError, match="DemonCallback state_dict"):
        DemonCallback().load_state_dict({"momentum_schedulers": [1, 2]})
    with pytest.raises(ConfigError, match="log_momentum"):
        DemonCallback(log_momentum="yes")  # type: ignore[arg-type]


# --- without Lightning; the example ---------------------------------------------------------------


def test_without_lightning_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("lightning", "lightning.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "demon_optim.integrations.lightning", raising=False)
    with pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module("demon_optim.integrations.lightning")
    message = str(caught.value)
    assert "\n" not in message and message.endswith(INSTALL)
    assert "needs PyTorch Lightning" in message


def test_importing_demon_optim_does_not_import_lightning() -> None:
    code = (
        "import sys, demon_optim, demon_optim.integrations; "
        "assert 'lightning' not in sys.modules, 'lightning imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


EXAMPLE = ROOT / "examples" / "lightning_demon.py"


def test_the_docs_show_the_example_file() -> None:
    doc = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    section = doc.split("## PyTorch Lightning", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block == EXAMPLE.read_text(encoding="utf-8")


@LIGHTNING
def test_the_example_runs_and_logs_the_momentum(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's CSV logs go to ./lightning_logs
    spec = importlib.util.spec_from_file_location("lightning_demon", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    run = example.main(max_epochs=2)
    total = 2 * 8  # 512 samples in batches of 32, 2 batches per optimizer step
    assert run.global_step == total
    (metrics,) = tmp_path.glob("lightning_logs/**/metrics.csv")
    with metrics.open(newline="") as file:
        logged = [float(row["momentum"]) for row in csv.DictReader(file) if row["momentum"]]
    assert logged[0] == pytest.approx(0.9)
    assert logged[-1] == pytest.approx(schedules.demon(total - 1, total, 0.9))
    assert logged == sorted(logged, reverse=True)  # Demon decays the momentum
