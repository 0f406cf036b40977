"""One trial: determinism, per-epoch records, divergence and failure as results, and the one
training loop driving a task through its hooks (carried state, gradient clipping, custom
batches, augmentation) exactly as a hand-written loop does."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from demon_optim.study.methods import Budget, applied_reader, get_method
from demon_optim.study.spec import TrialSpec
from demon_optim.study.tasks import Split, Task, TaskData, get_task
from demon_optim.study.tasks._image import ImageClassificationTask
from demon_optim.study.trial import run_trial
from tests.conftest import requires

needs_sklearn = requires("sklearn", "(ships the digits data)")


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spec(method: str = "demon-sgdm", lr: float = 0.1, epochs: int = 3, seed: int = 0) -> TrialSpec:
    config = {"lr": lr, "momentum": 0.9, "weight_decay": 0.0}
    if method.startswith("demon"):
        config["delay"] = 0.0
    return TrialSpec("digits-mlp", method, tuple(config.items()), seed, epochs, 100)


def run(trial: TrialSpec):
    task = get_task(trial.task)
    return run_trial(trial, task.load_data(), task)


TIMING = ("elapsed_s", "train_s")  # the clocks; every other key is deterministic


def without_timing(history: tuple[dict, ...]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


@needs_sklearn
@pytest.mark.parametrize("method", ["demon-sgdm", "adam+lr-cosine"])
def test_same_spec_same_numbers(method: str) -> None:
    lr = 0.1 if "sgdm" in method else 1e-3
    first, second = run(spec(method, lr)), run(spec(method, lr))
    assert first.status == second.status == "done"
    assert (first.val_metric, first.test_metric) == (second.val_metric, second.test_metric)
    assert without_timing(first.history) == without_timing(second.history)
    other_seed = run(spec(method, lr, seed=1))
    assert without_timing(other_seed.history) != without_timing(first.history)


@needs_sklearn
def test_record_contents() -> None:
    result = run(spec(epochs=3))
    assert result.status == "done" and result.error is None and result.traceback is None
    assert len(result.history) == 3
    assert set(result.history[0]) == {
        "epoch",
        "train_loss",
        "val_metric",
        "lr",
        "momentum",
        "steps",
        "elapsed_s",
        "train_s",
    }
    assert result.val_metric == result.history[-1]["val_metric"]
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    momenta = [r["momentum"] for r in result.history]
    assert momenta == sorted(momenta, reverse=True) and momenta[-1] < 0.9  # Demon decays
    assert set(result.versions) == {"python", "torch", "numpy", "demon_optim", "device"}
    assert result.versions["device"] == "cpu"  # where it ran (not part of the id)
    assert result.wall_time_s > 0 and result.started_at > 0
    assert torch.are_deterministic_algorithms_enabled() is False  # restored after the trial


@needs_sklearn
def test_steps_and_training_time_leave_evaluation_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """``train_s`` is the training steps' time alone: a slow validation pass shows in
    ``elapsed_s`` and not in ``train_s``; ``steps`` counts the optimizer steps so far."""
    import time

    task = get_task("digits-mlp")
    evaluate = task.evaluate_metrics
    pause = 0.15

    def slow(model: torch.nn.Module, split: Split, batch_size: int | None = None) -> dict:
        time.sleep(pause)
        return evaluate(model, split, batch_size)

    monkeypatch.setattr(task, "evaluate_metrics", slow)
    result = run(spec(epochs=3))
    assert result.status == "done"
    per_epoch = task.steps_per_epoch(task.load_data().train, 100)
    assert [r["steps"] for r in result.history] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    train = [r["train_s"] for r in result.history]
    elapsed = [r["elapsed_s"] for r in result.history]
    assert 0 < train[0] < train[1] < train[2]
    for epoch, (t, e) in enumerate(zip(train, elapsed, strict=True), start=1):
        assert e - t >= epoch * pause  # every validation pass so far, and only in elapsed_s
    # one epoch of digits takes milliseconds: the pauses would dominate a mixed clock
    assert train[2] < 3 * pause


@needs_sklearn
def test_huge_learning_rate_diverges_and_stops_early() -> None:
    result = run(spec("sgdm", lr=1e6, epochs=20))
    assert result.status == "diverged"
    assert result.val_metric is None and result.test_metric is None
    assert "non-finite training loss" in result.error
    assert len(result.history) < 20
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


@needs_sklearn
def test_exception_becomes_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("digits-mlp")

    def broken_model() -> torch.nn.Module:
        raise RuntimeError("model exploded")

    monkeypatch.setattr(task, "build_model", broken_model)
    result = run(spec())
    assert result.status == "failed"
    assert result.error == "RuntimeError: model exploded"
    assert "broken_model" in result.traceback
    assert result.history == ()


# --- the one training loop: a task's hooks --------------------------------------------------

AUGMENT_SEED_OFFSET = 1_000_003  # the trial's augmentation generator: seed + this


class Recurrent(torch.nn.Module):
    """An RNN over windows ``[T, B, 1]`` that takes and returns its hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.RNN(1, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, state = self.rnn(x.unsqueeze(-1), state)
        return self.head(output).squeeze(-1), state


class StreamTask(Task):
    """A user's task with state carried across windows, clipped gradients and its own
    reading order: predict the next value of a noisy sine, in windows of 5 steps of 4
    columns, from a start drawn from the trial's generator (the last window dropped)."""

    name = "test-stream"
    summary = "next value of a noisy sine; mean squared error"
    metric = "mse"
    higher_is_better = False
    batch_size = 4
    epochs = 2
    data_key = "test-stream"
    grad_clip: ClassVar[float | None] = 0.05  # small: clipping is active at most steps
    window = 5

    def __init__(self) -> None:
        self.calls = {"initial_state": 0, "detach_state": 0}

    def _load_data(self, data_dir) -> TaskData:
        generator = torch.Generator().manual_seed(0)
        stream = torch.sin(torch.arange(241.0) / 3) + 0.1 * torch.randn(241, generator=generator)
        return TaskData(*(Split(stream[:-1], stream[1:]) for _ in range(3)))

    def build_model(self) -> torch.nn.Module:
        return Recurrent()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs, targets)

    def evaluate(self, model: torch.nn.Module, split: Split, batch_size: int = 1000) -> float:
        with torch.no_grad():
            outputs, _ = model(split.inputs.view(-1, 1), torch.zeros(1, 1, 8))
        return float(self.loss(outputs, split.targets.view(-1, 1)))

    def columns(self, split: Split, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = len(split) // batch_size
        return tuple(
            t[: rows * batch_size].view(batch_size, rows).t() for t in (split.inputs, split.targets)
        )

    def windows(self, split: Split, batch_size: int) -> int:
        return len(split) // batch_size // self.window - 1

    def steps_per_epoch(self, split: Split, batch_size: int, token_budget=None) -> int:
        return self.windows(split, batch_size)

    def batches(self, split, batch_size, generator, *, augment_generator, token_budget=None):
        x, y = self.columns(split, batch_size)
        first = int(torch.randint(0, 2, (1,), generator=generator))  # 0 or 1 window in
        for w in range(first, first + self.windows(split, batch_size)):
            rows = slice(w * self.window, (w + 1) * self.window)
            yield x[rows], y[rows]

    def initial_state(self, model: torch.nn.Module, batch_size: int) -> torch.Tensor:
        self.calls["initial_state"] += 1
        return torch.zeros(1, batch_size, 8)

    def detach_state(self, state: torch.Tensor) -> torch.Tensor:
        self.calls["detach_state"] += 1
        return state.detach()

    def forward(self, model, inputs, state):
        return model(inputs, state)


def stream_spec(method: str = "sgdm+lr-cosine", epochs: int = 2) -> TrialSpec:
    config = (("lr", 0.1), ("momentum", 0.9), ("weight_decay", 0.0))
    return TrialSpec("test-stream", method, config, seed=7, epochs=epochs, batch_size=4)


def hand_written_stateful_loop(task: StreamTask, trial: TrialSpec, data: TaskData) -> dict:
    """Truncated BPTT written out: what the trial loop must do for StreamTask."""
    method = get_method(trial.method)
    config = method.check_config(trial.config)
    steps = task.steps_per_epoch(data.train, trial.batch_size)
    torch.manual_seed(trial.seed)
    model = task.build_model()
    generator = torch.Generator().manual_seed(trial.seed)
    training = method.build(model.parameters(), config, Budget(trial.epochs, steps, False))
    x, y = task.columns(data.train, trial.batch_size)
    losses, vals, clipped = [], [], 0
    for _ in range(trial.epochs):
        model.train()
        state = torch.zeros(1, trial.batch_size, 8)
        first = int(torch.randint(0, 2, (1,), generator=generator))
        total = 0.0
        for w in range(first, first + steps):
            rows = slice(w * task.window, (w + 1) * task.window)
            outputs, state = model(x[rows], state.detach())
            loss = torch.nn.functional.mse_loss(outputs, y[rows])
            total += loss.item()
            training.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), task.grad_clip)
            clipped += bool(norm > task.grad_clip)
            training.optimizer.step()
            for hook in training.after_step:
                hook()
        losses.append(total / steps)
        vals.append(task.evaluate(model, data.val))
    return {
        "losses": losses,
        "vals": vals,
        "test": task.evaluate(model, data.test),
        "clipped": clipped,
    }


def test_stateful_clipped_task_trains_through_the_loop_as_written_by_hand() -> None:
    task = StreamTask()
    data = task.load_data()
    trial = stream_spec()
    result = run_trial(trial, data, task)
    assert result.status == "done", result.traceback
    calls = dict(task.calls)
    expected = hand_written_stateful_loop(StreamTask(), trial, data)
    assert expected["clipped"] > 0  # the clip changes the numbers
    assert [r["train_loss"] for r in result.history] == expected["losses"]
    assert [r["val_metric"] for r in result.history] == expected["vals"]
    assert result.test_metric == expected["test"]
    steps = task.steps_per_epoch(data.train, 4)
    assert calls == {"initial_state": 2, "detach_state": 2 * steps}


def test_without_its_clip_the_stateful_task_trains_differently() -> None:
    """The hand-written loop above is sensitive to the clip: the equality is not vacuous."""
    task = StreamTask()
    data = task.load_data()
    clipped = run_trial(stream_spec(), data, task)
    task.grad_clip = None
    unclipped = run_trial(stream_spec(), data, task)
    assert unclipped.status == clipped.status == "done"
    assert without_timing(unclipped.history) != without_timing(clipped.history)


class MiscountedStream(StreamTask):
    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def steps_per_epoch(self, split: Split, batch_size: int, token_budget=None) -> int:
        return super().steps_per_epoch(split, batch_size) + self.extra


@pytest.mark.parametrize(("extra", "got"), [(1, "11"), (-1, "more than 10")])
def test_batches_that_disagree_with_steps_per_epoch_fail_the_trial(extra: int, got: str) -> None:
    """The schedules are built for steps_per_epoch: a task whose batches() yields another
    number fails, naming both counts, before its schedule runs past T."""
    task = MiscountedStream(extra)
    result = run_trial(stream_spec(), task.load_data(), task)
    assert result.status == "failed"
    assert result.error == (
        f"RuntimeError: task test-stream: batches() yielded {got} batches in epoch 1, "
        f"steps_per_epoch() said {11 + extra}"
    )


class Bytes(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255


def test_a_task_without_a_step_per_epoch_fails_the_trial_saying_why() -> None:
    task = MiscountedStream(-11)  # steps_per_epoch() == 0
    result = run_trial(stream_spec(), task.load_data(), task)
    assert result.status == "failed"
    assert result.error == (
        "ValueError: task test-stream: steps_per_epoch() gave 0 for 240 training examples at "
        "batch size 4; a trial needs at least 1 step per epoch"
    )


class TinyImageTask(ImageClassificationTask):
    """Random 3x8x8 uint8 images through the default batches: shuffled, augmented."""

    name = "test-tiny-images"
    summary = "random images; accuracy"
    num_classes = 3
    batch_size = 16
    epochs = 3
    data_key = "test-tiny-images"
    crop_padding, flip = 2, True

    def _load_data(self, data_dir) -> TaskData:
        generator = torch.Generator().manual_seed(1)

        def split(n: int) -> Split:
            images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
            return Split(images, torch.randint(0, 3, (n,), generator=generator))

        return TaskData(split(50), split(12), split(12))

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Sequential(
            Bytes(),
            torch.nn.Flatten(),
            torch.nn.Linear(192, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 3),
        )


def test_augmented_task_trains_on_shuffled_augmented_batches_as_before() -> None:
    """The default batches: a permutation per epoch from the trial seed's generator, the last
    batch smaller, each batch augmented from a second generator (seed + 1,000,003) that
    carries over from epoch to epoch, as the harness's loop has always done."""
    task = TinyImageTask()
    data = task.load_data()
    config = (("lr", 0.05), ("momentum", 0.9), ("weight_decay", 0.0), ("delay", 0.0))
    trial = TrialSpec(task.name, "demon-sgdm", config, seed=4, epochs=3, batch_size=16)
    result = run_trial(trial, data, task)
    assert result.status == "done", result.traceback

    method = get_method(trial.method)
    n, batch, steps = len(data.train), 16, 4  # 16 + 16 + 16 + 2
    torch.manual_seed(trial.seed)
    model = task.build_model()
    shuffle = torch.Generator().manual_seed(trial.seed)
    augment = torch.Generator().manual_seed(trial.seed + AUGMENT_SEED_OFFSET)
    training = method.build(
        model.parameters(), method.check_config(trial.config), Budget(3, steps, True)
    )
    expected = []
    for _ in range(trial.epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            loss = task.loss(
                model(task.augment(data.train.inputs[index], augment)), data.train.targets[index]
            )
            total += loss.item()
            training.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            training.optimizer.step()
            if i == steps - 1:
                lr, momentum = applied_reader(training.optimizer)()
            for hook in training.after_step:
                hook()
        expected.append(
            {
                "train_loss": total / steps,
                "val_metric": task.evaluate(model, data.val),
                "lr": lr,
                "momentum": momentum,
            }
        )
    got = [
        {k: r[k] for k in ("train_loss", "val_metric", "lr", "momentum")} for r in result.history
    ]
    assert got == expected
    assert result.test_metric == task.evaluate(model, data.test)


def test_default_hooks_are_stateless_and_pass_the_model_through() -> None:
    task = TinyImageTask()
    model = task.build_model()
    x = torch.rand(2, 3, 8, 8)
    assert task.initial_state(model, 2) is None and task.detach_state(None) is None
    outputs, state = task.forward(model, x, None)
    assert state is None and torch.equal(outputs, model(x))
    assert TinyImageTask.grad_clip is None and not TinyImageTask.uses_token_budget
