"""torch's fused Adam kernel as DemonAdam and QHAdam drive it: bias corrections our own.

Both write their update as the kernel's, ``e = lerp(e, g, 1 - beta1)`` then
``theta -= lr' e / (sqrt(v) + eps')``, with the kernel's own bias corrections switched off
(its step count is +inf, so ``1 - beta**step = 1``) and theirs folded into ``lr'`` and
``eps'``: for the second moment's ``bc2 = 1 - beta2**t``, ``lr'`` carries ``sqrt(bc2)`` and
``eps' = eps sqrt(bc2)``. The first moment's correction differs between the two (a scaled
moment in DemonAdam, the quasi-hyperbolic mix in QHAdam): each computes its ``lr'`` and
``beta1`` itself (see their module docstrings) and :func:`fused_adam` does the rest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import cache_batches, group_by_device_dtype

__all__ = ["fused_adam"]

# The fused kernel computes 1 - beta**step for its bias corrections; step = inf makes both 1.
_INF_STEP: dict[torch.device, Tensor] = {}


def _inf_step(device: torch.device) -> Tensor:
    """The kernel's step count, +inf, on the parameters' device (made once per device).

    float32 whatever the default dtype: the CUDA kernel reads its step counts as floats
    (torch's fused Adam keeps them so), and a float64 inf read as a float is 0, which would
    make both bias corrections 0. It is on the parameters' device because the CUDA kernel
    reads it there (torch's own fused step counts live there too).
    """
    if device not in _INF_STEP:
        _INF_STEP[device] = torch.tensor(math.inf, dtype=torch.float32, device=device)
    return _INF_STEP[device]


def fused_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    lr: float,
    kernel_lr: float,
    beta1: float,
    beta2: float,
    root: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    restore: float | None = None,
) -> None:
    """One kernel call per (device, dtype) run of tensors that share their scalars.

    It computes ``e = lerp(e, g, 1 - beta1)``, ``v = beta2 v + (1 - beta2) g^2`` and
    ``theta -= kernel_lr * e / (sqrt(v) + eps * root)``, with ``root = sqrt(bc2)`` (computed
    by the caller, so each keeps its own rounding). Weight decay is coupled (added to ``g``)
    or ``decoupled``: ``theta *= 1 - lr * weight_decay`` with the true ``lr``, which the
    kernel, decaying by ``1 - lr' wd'``, gets as ``wd' = lr wd / lr'``. ``restore``: after
    each call, ``e = lerp(e, g, restore)`` (QHAdam's pass that brings back its first
    moment), batch by batch so that it reads what the kernel just left in cache; ``grads``
    must then be the gradients the kernel used (after ``maximize`` and coupled decay).
    """
    kernel_wd = weight_decay
    if decoupled and weight_decay != 0:
        kernel_wd = lr * weight_decay / kernel_lr if kernel_lr != 0 else 0.0
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel_eps = eps * root
    for p_run, g_run, m_run, v_run in group_by_device_dtype(params, grads, exp_avgs, exp_avg_sqs):
        inf_step = _inf_step(p_run[0].device)
        if restore is None:
            batches = [(p_run, g_run, m_run, v_run)]
        else:
            batches = [
                tuple([run[j] for j in batch] for run in (p_run, g_run, m_run, v_run))
                for batch in cache_batches(p_run)
            ]
        for ps, gs, ms, vs in batches:
            kernel(
                ps,
                gs,
                ms,
                vs,
                [],
                [inf_step] * len(ps),
                lr=kernel_lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=kernel_wd,
                eps=kernel_eps,
                amsgrad=False,
                maximize=maximize,
            )
            if restore is not None:
                torch._foreach_lerp_(ms, gs, restore)
