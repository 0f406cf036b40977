"""Where trials run: device names, their checks, and what a trial records about its device.

A study's ``device`` is ``"auto"`` (a CUDA GPU when the worker has one, else the CPU),
``"cpu"``, ``"cuda"`` (the worker's current GPU), ``"cuda:N"`` or ``"mps"``. The device is not
part of a trial's id (the same trial on CPU and GPU is one trial: it is recorded, not
hashed), so it is resolved where the trial runs: in a worker that the local executor pinned
to one GPU (``CUDA_VISIBLE_DEVICES``), the study's ``cuda:N`` is that worker's ``cuda:0``.

``precision`` (``fp32``, ``bf16``, ``fp16``: automatic mixed precision, fp16 with a gradient
scaler) and ``channels_last`` (image models) change a trial's numbers, so they enter its id
when they are not the default.
"""

from __future__ import annotations

import os
import re

import torch

from demon_optim.errors import ConfigError, invalid

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_DEVICE, DEFAULT_PRECISION = "auto", "fp32"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Set by the local executor in a worker it pinned to one GPU (the GPU's index on the host).
PINNED_ENV = "DEMON_OPTIM_PINNED_GPU"

_CUDA = re.compile(r"cuda(?::(\d+))?")


def check_device(field: str, value: object) -> str:
    """A device name as a study writes it (checked for form only; see :func:`require`)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "cpu", "mps") or _CUDA.fullmatch(text):
            return text
    raise invalid(field, value, ", ".join(DEVICES))


def check_precision(field: str, value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in PRECISIONS:
        return value.strip().lower()
    raise invalid(field, value, ", ".join(PRECISIONS))


def available() -> str:
    """What this process can use, in words (for messages)."""
    found = ["cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
        found.append(names)
    elif torch.version.cuda is None:
        found.append(f"no CUDA (torch {torch.__version__} is built without it)")
    else:
        found.append("no CUDA device visible")
    if _mps_available():
        found.append("mps")
    return "; ".join(found)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def require(device: str, field: str = "device") -> None:
    """Refuse, before any training, a device this process does not have (one line naming
    it and what is available). ``auto`` is always there."""
    if device in ("auto", "cpu"):
        return
    if device == "mps":
        if not _mps_available():
            raise ConfigError(f"{field}: got 'mps', which is not here; available: {available()}")
        return
    match = _CUDA.fullmatch(device)
    assert match is not None, device
    if not torch.cuda.is_available():
        raise ConfigError(f"{field}: got {device!r}, which is not here; available: {available()}")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{field}: got {device!r}, which is not here; available: {available()}")


def resolve(device: str) -> torch.device:
    """The torch device a trial uses in this process (``auto``: CUDA when there is one)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _CUDA.fullmatch(device)
    if match is not None:
        if os.environ.get(PINNED_ENV) is not None:
            return torch.device("cuda:0")  # the one GPU this worker sees
        return torch.device(f"cuda:{int(match.group(1) or 0)}")
    return torch.device(device)


def cuda_indices(device: str) -> list[int]:
    """The host GPUs a study's device asks for (``cuda:N``: that one; ``cuda``/``auto``: all
    visible ones; none without CUDA)."""
    if device in ("cpu", "mps") or not torch.cuda.is_available():
        return []
    match = _CUDA.fullmatch(device)
    if match is not None and match.group(1) is not None:
        return [int(match.group(1))]
    return list(range(torch.cuda.device_count()))


def describe(device: torch.device) -> dict[str, str]:
    """What a trial records about its device, beside the library versions: the device (a
    GPU with its name), CUDA and cuDNN versions, and the host GPU a pinned worker had."""
    pinned = os.environ.get(PINNED_ENV)
    host = {"host_gpu": pinned} if pinned is not None else {}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cudnn = torch.backends.cudnn.version()
        return {
            "device": f"cuda:{index} {torch.cuda.get_device_name(index)}",
            "cuda": str(torch.version.cuda),
            "cudnn": str(cudnn) if cudnn is not None else "none",
            **host,
        }
    return {"device": str(device), **host}


def deterministic_cuda() -> None:
    """Ask CUDA for determinism as far as torch allows (before its first use in a process):
    cuBLAS's fixed workspace, cuDNN without autotuning. Deterministic algorithms are asked
    for by the trial itself (warn-only: an op without a deterministic CUDA kernel warns)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
