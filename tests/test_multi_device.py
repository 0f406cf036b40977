"""Parameters on several devices in one optimizer, and the helpers that keep devices apart.

Every kernel call takes one (device, dtype) run of tensors, and the scalars a compiled step
reads live on their tensors' device. Without a GPU the grouping is tested with the "meta"
device (tensors without data) as the second device; with one, an optimizer over CPU and
CUDA parameters (and over two GPUs, where there are two) must equal one optimizer per
device, bit for bit.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from demon_optim import ConfigError, DemonAdam, DemonSGD
from demon_optim.optim import QHM, AggMo, QHAdam, _base, _fused_adam
from demon_optim.optim import qhadam as qhadam_module
from tests.conftest import cuda_only

META = torch.device("meta")
CPU = torch.device("cpu")

# Every optimizer whose steps are per parameter (YellowFin's tuner is global: one optimizer
# over two devices measures both together, which two optimizers cannot).
MAKERS = {
    "demon-sgd": lambda ps, f: DemonSGD(ps, lr=0.05, nesterov=True, total_steps=15, fused=f),
    "demon-adam": lambda ps, f: DemonAdam(ps, lr=0.01, total_steps=15, fused=f),
    "demon-adam-damped": lambda ps, f: DemonAdam(
        ps, lr=0.01, total_steps=15, damped=True, weight_decay=1e-2, fused=f
    ),
    "qhm": lambda ps, f: QHM(ps, lr=0.5, momentum=0.9, nu=0.7, fused=f),
    "qhadam": lambda ps, f: QHAdam(ps, lr=0.01, betas=(0.9, 0.999), nus=(0.7, 1.0), fused=f),
    "aggmo": lambda ps, f: AggMo(ps, lr=0.01, weight_decay=1e-2, fused=f),
}
STEPS = 20  # past total_steps=15: the Demon schedules reach 0


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# --- the helpers, on the CPU -------------------------------------------------------------------


def test_group_by_device_dtype_splits_runs_in_first_seen_order():
    tensors = [
        torch.zeros(2),
        torch.zeros(2, device=META),
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(3),
        torch.zeros(3, device=META),
    ]
    tags = list(range(len(tensors)))  # a parallel list stays aligned with the first
    runs = _base.group_by_device_dtype(tensors, tags)
    assert [tag for _, tag in runs] == [[0, 3], [1, 4], [2]]
    assert [{(t.device, t.dtype) for t in run} for run, _ in runs] == [
        {(CPU, torch.float32)},
        {(META, torch.float32)},
        {(CPU, torch.float64)},
    ]


def test_cache_batches_split_on_the_cpu_only():
    sizes = [300_000, 300_000, 600_000, 10]
    on_cpu = [torch.empty(n) for n in sizes]
    assert _base.cache_batches(on_cpu) == [[0], [1], [2], [3]]
    assert _base.cache_batches(on_cpu, limit=10**9) == [[0, 1, 2, 3]]
    # elsewhere a batch is one more kernel launch per pass: one batch for the whole run
    elsewhere = [torch.empty(n, device=META) for n in sizes]
    assert _base.cache_batches(elsewhere) == [[0, 1, 2, 3]]
    assert _base.cache_batches([]) == []


def test_inf_step_is_float32_on_its_device_whatever_the_default_dtype(monkeypatch):
    """The CUDA kernel reads its step counts as float32: a float64 inf read so would be 0."""
    monkeypatch.setattr(_fused_adam, "_INF_STEP", {})
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for device in (CPU, META):
            step = _fused_adam._inf_step(device)
            assert step.dtype == torch.float32 and step.device == device and step.dim() == 0
        assert _fused_adam._inf_step(CPU).item() == math.inf
        assert _fused_adam._inf_step(CPU) is _fused_adam._inf_step(CPU)  # made once
    finally:
        torch.set_default_dtype(before)


def test_fused_adam_under_a_float64_default_dtype_is_unchanged():
    def run():
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(16, generator=gen, dtype=torch.float32))
        opt = DemonAdam([p], lr=0.01, total_steps=10)
        for _ in range(5):
            p.grad = torch.randn(16, generator=gen, dtype=torch.float32)
            opt.step()
        return p.detach().clone()

    expected = run()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert torch.equal(run(), expected)
    finally:
        torch.set_default_dtype(before)


def test_scalars_on_keep_the_cpu_values_and_copy_the_rest_per_device():
    beta = torch.tensor(0.5, dtype=torch.float64)
    values = [0.25, beta, 0.75, 1.5]
    devices = [CPU, CPU, META, META]
    out = _base.scalars_on(values, devices)
    assert out[1] is beta  # a CPU tensor is kept
    assert torch.equal(out[0], torch.tensor(0.25, dtype=torch.float64))
    for tensor, device in zip(out, devices, strict=True):
        assert tensor.device == device and tensor.dtype == torch.float64 and tensor.dim() == 0
    assert torch.equal(
        _base.host_to_device([1.0, 2.0], CPU), torch.tensor([1.0, 2.0], dtype=torch.float64)
    )
    assert _base.host_to_device([1.0, 2.0], META).device == META


def test_use_fused_by_default_on_cpu_and_cuda_and_where_torch_has_kernels_on_request():
    on_cpu = [torch.zeros(2)]
    on_meta = [torch.zeros(2, device=META)]
    assert _base.use_fused(None, on_cpu)
    assert not _base.use_fused(None, on_meta)  # no kernels there: the for-loop
    assert not _base.use_fused(None, on_cpu + on_meta)  # one group, one path
    assert {"cpu", "cuda"} <= set(_base.fused_devices())
    with pytest.raises(ConfigError, match=r"^fused: got True; allowed: True only for dense"):
        _base.use_fused(True, on_meta)


# --- one optimizer over two devices, with meta as the second one --------------------------------


def pair(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cpu = torch.nn.Parameter(torch.randn(8, generator=gen))
    meta = torch.nn.Parameter(torch.empty(8, device=META))
    alone = torch.nn.Parameter(cpu.detach().clone())
    return gen, cpu, meta, alone


def step_both(gen, cpu, meta, alone):
    g = torch.randn(8, generator=gen)
    cpu.grad, alone.grad = g.clone(), g.clone()
    meta.grad = torch.empty(8, device=META)


@pytest.mark.parametrize("name", list(MAKERS))
def test_cpu_and_meta_parameters_in_one_optimizer(name):
    """Each device's tensors go to their own calls: the CPU parameter moves exactly as it
    does in an optimizer of its own (meta has no kernels: the for-loop, on both)."""
    gen, cpu, meta, alone = pair()
    mixed, single = MAKERS[name]([cpu, meta], None), MAKERS[name]([alone], False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(STEPS):
            step_both(gen, cpu, meta, alone)
            mixed.step()
            single.step()
    assert torch.equal(cpu.detach(), alone.detach())
    assert all(t.device == META for t in mixed.state[meta].values() if torch.is_tensor(t))


@pytest.mark.parametrize("name", ["demon-sgd", "demon-adam", "demon-adam-damped"])
def test_compiled_step_over_cpu_and_meta_parameters(name):
    """Under torch.compile each device gets its scalars on that device (scalars_on): the
    graph compiles once as beta moves, and the CPU parameter follows the eager optimizer."""
    gen, cpu, meta, alone = pair()
    compiled_opt, eager = MAKERS[name]([cpu, meta], None), MAKERS[name]([alone], None)
    counter = CompileCounter()

    @torch.compile(backend=counter)
    def compiled_step():
        compiled_opt.step()

    frames = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(STEPS):
            step_both(gen, cpu, meta, alone)
            compiled_step()
            eager.step()
            frames.append(counter.frame_count)
    assert frames[-1] <= 2 and frames[3] == frames[-1], frames
    torch.testing.assert_close(cpu.detach(), alone.detach(), rtol=1e-6, atol=1e-6)


def test_compiled_qhadam_over_cpu_and_meta_parameters(monkeypatch):
    """One compiled graph per device, each with its scalars on its device."""
    counter = CompileCounter()
    compiled = torch.compile(qhadam_module._one_pass, fullgraph=True, backend=counter)
    monkeypatch.setattr(qhadam_module, "_compiled_one_pass", lambda: compiled)
    gen, cpu, meta, alone = pair()
    options = {"lr": 0.01, "nus": (0.7, 0.9)}
    mixed = QHAdam([cpu, meta], compiled=True, **options)
    single = QHAdam([alone], fused=False, **options)
    for _ in range(STEPS):
        step_both(gen, cpu, meta, alone)
        mixed.step()
        single.step()
    assert counter.frame_count == 2  # one graph per device, none recompiled
    torch.testing.assert_close(cpu.detach(), alone.detach(), rtol=1e-6, atol=1e-6)


# --- on GPUs -------------------------------------------------------------------------------------


def split_run(name: str, devices: list[str], fused: bool | None, steps: int = 50):
    """One optimizer over a parameter per device against one optimizer per device."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(64, generator=gen) for _ in devices]
    mixed = [torch.nn.Parameter(t.to(d)) for t, d in zip(start, devices, strict=True)]
    alone = [torch.nn.Parameter(t.to(d)) for t, d in zip(start, devices, strict=True)]
    opt = MAKERS[name](mixed, fused)
    singles = [MAKERS[name]([p], fused) for p in alone]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            for p, q in zip(mixed, alone, strict=True):
                g = torch.randn(64, generator=gen).to(p.device)
                p.grad, q.grad = g.clone(), g.clone()
            opt.step()
            for single in singles:
                single.step()
    return mixed, alone, opt


@pytest.mark.parametrize("fused", [None, False], ids=["default", "loop"])
@pytest.mark.parametrize("name", list(MAKERS))
@cuda_only
def test_cpu_and_cuda_parameters_in_one_optimizer_equal_one_per_device(name, fused):
    mixed, alone, opt = split_run(name, ["cpu", "cuda"], fused)
    for p, q in zip(mixed, alone, strict=True):
        assert p.device == q.device and torch.equal(p.detach(), q.detach())
    for p in mixed:
        for value in opt.state[p].values():
            tensors = value if isinstance(value, list) else [value]
            assert all(t.device == p.device for t in tensors if torch.is_tensor(t))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("name", list(MAKERS))
@cuda_only
def test_two_gpus_in_one_optimizer_equal_one_per_device(name):
    mixed, alone, _ = split_run(name, ["cuda:0", "cuda:1"], None)
    for p, q in zip(mixed, alone, strict=True):
        assert torch.equal(p.detach(), q.detach())


@cuda_only
def test_compiled_qhadam_over_cpu_and_cuda_equals_one_per_device(monkeypatch):
    compiled = torch.compile(qhadam_module._one_pass, fullgraph=True, backend="aot_eager")
    monkeypatch.setattr(qhadam_module, "_compiled_one_pass", lambda: compiled)
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(64, generator=gen) for _ in range(2)]
    devices = ["cpu", "cuda"]
    mixed = [torch.nn.Parameter(t.to(d)) for t, d in zip(start, devices, strict=True)]
    alone = [torch.nn.Parameter(t.to(d)) for t, d in zip(start, devices, strict=True)]
    options = {"lr": 0.01, "nus": (0.7, 0.9), "compiled": True}
    opt, singles = QHAdam(mixed, **options), [QHAdam([p], **options) for p in alone]
    for _ in range(30):
        for p, q in zip(mixed, alone, strict=True):
            g = torch.randn(64, generator=gen).to(p.device)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        for single in singles:
            single.step()
    for p, q in zip(mixed, alone, strict=True):
        assert torch.equal(p.detach(), q.detach())
