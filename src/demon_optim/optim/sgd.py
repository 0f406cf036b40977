r"""Demon SGDM: SGD with momentum whose momentum follows a schedule (Demon by default).

Paper (Chen et al., Algorithm 1) in torch.optim.SGD's convention, identical for a constant lr:

.. math::

    b_0 = g_0, \qquad b_k = \beta_k b_{k-1} + (1 - \tau) g_k, \qquad
    \theta_{k+1} = \theta_k - \eta\, b_k
    \quad(\text{nesterov: } \theta_{k+1} = \theta_k - \eta (g_k + \beta_k b_k))

with :math:`\beta_k` = ``schedules.demon(k, T, beta_init)``, :math:`\tau` the dampening,
``maximize`` negating g first and coupled weight decay ``g += weight_decay * theta``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ..errors import invalid
from ._base import (
    STEP_KEY,
    Gathered,
    ScheduleArg,
    ScheduledMomentumOptimizer,
    gather,
    group_by_device_dtype,
    param_layout,
    real_view,
    runs_by,
    scalars_on,
    use_fused_sgd,
)

__all__ = ["DemonSGD", "demon_sgd"]


class DemonSGD(ScheduledMomentumOptimizer):
    r"""SGD with decaying momentum (Demon SGDM, Chen et al. 2019, Algorithm 1).

    At step ``k`` the momentum is
    :math:`\beta_k = \beta_{init}(T - k)/(T - \beta_{init} k)` (0 from ``k = T`` on), so each
    gradient's total future contribution :math:`\beta/(1-\beta)` shrinks linearly to zero.

    Args:
        params: parameters or parameter groups. A group may set its own ``momentum``
            (``beta_init``), ``total_steps``, ``schedule``, ``lr``, ...
        lr: learning rate.
        momentum: ``beta_init``, the momentum at step 0, in [0, 1).
        dampening: as torch SGD (not applied to the first gradient).
        weight_decay: coupled L2 penalty added to the gradient.
        nesterov: Nesterov momentum (requires ``dampening=0``).
        total_steps: ``T``, the number of ``step()`` calls over which momentum decays;
            ``None`` leaves it to :meth:`set_total_steps` (a framework's callback).
        schedule: a name from :data:`demon_optim.schedules.SCHEDULES` or a callable
            ``(k, T, beta_init) -> beta``. ``"constant"`` makes this ``torch.optim.SGD``.
        delay: fraction of the run to hold ``beta_init`` before Demon's decay starts.
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused SGD kernel (default: where the tensors allow; it gives the
            same numbers as the for-loop path, faster). ``False`` forces the for-loop.

    ``group["momentum"]`` keeps ``beta_init``; :meth:`get_last_momentum` reports the beta
    applied. With ``schedule="constant"`` the result equals ``torch.optim.SGD`` bit for bit.
    Sparse gradients (``nn.Embedding(sparse=True)``) take the for-loop, as in torch's SGD,
    with ``weight_decay=0`` (torch's SGD cannot add a dense decay to a sparse gradient
    either). A complex parameter is updated as its real view.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        total_steps: int | None = None,
        schedule: ScheduleArg = "demon",
        delay: float = 0.0,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "total_steps": total_steps,
            "schedule": schedule,
            "delay": delay,
            "maximize": maximize,
            "fused": fused,
            STEP_KEY: 0,
        }
        super().__init__(params, defaults)

    def _beta_init(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        _checks.unit_interval("momentum", group["momentum"])
        _checks.nonnegative("dampening", group["dampening"], tensor_ok=True)
        _checks.nonnegative("weight_decay", group["weight_decay"], tensor_ok=True)
        _checks.flag("nesterov", group["nesterov"])
        _checks.flag("maximize", group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise invalid(
                "nesterov",
                f"True with momentum={group['momentum']}, dampening={group['dampening']}",
                "nesterov=True only with momentum > 0 and dampening = 0",
            )
        use_fused_sgd(group["fused"], group["params"], complex_ok=True)

    def _gather(self, group: dict[str, Any]) -> Gathered:
        """As torch's SGD, sparse gradients are welcome, on the for-loop and without decay."""
        batch = gather(self, group, sparse_ok=True)
        if batch.sparse:
            if group["fused"]:
                raise invalid("fused", group["fused"], "None or False with sparse gradients")
            if group["weight_decay"] != 0:
                raise invalid(
                    "weight_decay",
                    group["weight_decay"],
                    "0 with sparse gradients (as torch's SGD)",
                )
        return batch

    def _update_group(
        self, group: dict[str, Any], batch: Gathered, beta: Any, compiling: bool
    ) -> None:
        state = self.state
        buffers = [state[p].get("momentum_buffer") for p in batch.keys]
        if batch.complex:
            buffers = [None if b is None else real_view(b) for b in buffers]
        fresh = [i for i, b in enumerate(buffers) if b is None]
        options = {
            "lr": group["lr"],
            "dampening": group["dampening"],
            "weight_decay": group["weight_decay"],
            "nesterov": group["nesterov"],
            "maximize": group["maximize"],
        }
        if compiling:
            _demon_sgd_traced(batch.params, batch.grads, buffers, beta, options)
        else:
            fused = not batch.sparse and use_fused_sgd(group["fused"], batch.params)
            demon_sgd(batch.params, batch.grads, buffers, beta=beta, fused=fused, **options)
        # the update changes the other buffers in place: only new ones need storing
        for i in fresh:
            key, buffer = batch.keys[i], buffers[i]
            state[key]["momentum_buffer"] = None if buffer is None else param_layout(buffer, key)


def demon_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    beta: float | Tensor,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    fused: bool = False,
) -> None:
    """One SGD-momentum step with momentum ``beta`` (functional form of :class:`DemonSGD`).

    ``momentum_buffers`` is updated in place; a ``None`` entry (a parameter's first
    gradient) is replaced by its new buffer.
    """
    if fused and not isinstance(beta, Tensor) and beta != 0 and not isinstance(lr, Tensor):
        _fused_sgd(
            params, grads, momentum_buffers, lr, beta, dampening, weight_decay, nesterov, maximize
        )
        return
    # The for-loop path: torch's single-tensor SGD without its `momentum != 0` shortcut, so
    # a momentum that reaches 0 still refreshes the buffer as the equations say.
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        g = grad.neg() if maximize else grad
        if weight_decay != 0:
            g = g.add(param, alpha=weight_decay)
        buf = momentum_buffers[i]
        if buf is None:
            buf = torch.clone(g).detach()
            momentum_buffers[i] = buf
        else:
            buf.mul_(beta).add_(g, alpha=1 - dampening)
        if not nesterov:
            step = buf
        elif isinstance(beta, Tensor):
            step = g.add(buf * beta)
        else:
            step = g.add(buf, alpha=beta)
        if isinstance(lr, Tensor):
            param.sub_(step * lr)
        else:
            param.add_(step, alpha=-lr)


def _demon_sgd_traced(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    beta: Tensor,
    options: dict[str, Any],
) -> None:
    """The step ``torch.compile`` traces: the for-loop, with beta a 0-d tensor input.

    On the CPU beta is the CPU tensor it came as. Tensors on other devices get it on their
    own device, one for-loop per device (:func:`scalars_on`): a CPU scalar in a CUDA graph
    would be copied over with a host sync at every step.
    """
    devices = [p.device for p in params]
    if all(d.type == "cpu" for d in devices):
        demon_sgd(params, grads, momentum_buffers, beta=beta, fused=False, **options)
        return
    runs = runs_by(devices)
    betas = scalars_on([beta] * len(runs), list(runs))
    for idx, device_beta in zip(runs.values(), betas, strict=True):
        buffers = [momentum_buffers[i] for i in idx]
        demon_sgd(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            buffers,
            beta=device_beta,
            fused=False,
            **options,
        )
        for i, buf in zip(idx, buffers, strict=True):
            momentum_buffers[i] = buf


def _fused_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    lr: float,
    beta: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """torch's fused SGD kernel with this step's momentum (same numbers as the for-loop).

    The kernel sets ``buf = g`` for a whole call flagged as a first step, so parameters
    that have no buffer yet go in a call of their own.
    """
    fresh = {i for i, b in enumerate(momentum_buffers) if b is None}
    for i in fresh:
        momentum_buffers[i] = torch.empty_like(grads[i], memory_format=torch.preserve_format)
    # after the first step no buffer is new: one call takes the lists as they are
    calls = [(bool(fresh), params, grads, momentum_buffers)]
    if 0 < len(fresh) < len(params):
        calls = []
        for first_step in (True, False):
            idx = [i for i in range(len(params)) if (i in fresh) == first_step]
            b_call = [momentum_buffers[i] for i in idx]
            calls.append((first_step, [params[i] for i in idx], [grads[i] for i in idx], b_call))
    for first_step, p_call, g_call, b_call in calls:
        for p_run, g_run, b_run in group_by_device_dtype(p_call, g_call, b_call):
            torch._fused_sgd_(
                p_run,
                g_run,
                b_run,
                weight_decay=weight_decay,
                momentum=beta,
                lr=lr,
                dampening=dampening,
                nesterov=nesterov,
                maximize=maximize,
                is_first_step=first_step,
            )
