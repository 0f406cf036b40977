r"""QHM: quasi-hyperbolic momentum (Ma & Yarats, "Quasi-hyperbolic momentum and Adam for deep
learning", ICLR 2019).

The update averages a plain SGD step and a momentum step, with the momentum buffer an
exponential moving average of the gradients started from zero:

.. math::

    b_t = \beta b_{t-1} + (1 - \beta) g_t, \qquad b_0 = 0, \qquad
    \theta_{t+1} = \theta_t - \alpha \left[(1 - \nu) g_t + \nu b_t\right]

with ``g`` the gradient after ``maximize`` (negation) and coupled weight decay
(``g += weight_decay * theta``, as the authors' ``qhoptim`` package with its default
``weight_decay_type="grad"``). Special cases: ``nu = 0`` is plain SGD, ``nu = 1`` is momentum
SGD in its EMA form, and (paper, section 3) ``nu = beta`` is Nesterov momentum in EMA form.

Because ``b`` is a normalised average (not torch's ``b = beta b + g``), QHM's ``lr`` plays the
role of SGD momentum's ``lr / (1 - beta)``: QHM(lr=1.0, momentum=0.9, nu=1) takes the steps of
torch SGD(lr=0.1, momentum=0.9). The paper recommends ``nu = 0.7, momentum = 0.999``.

How it runs fast: torch's fused SGD kernel with Nesterov momentum computes
``B = mu B + (1 - tau) g; theta -= lr' (g + mu B)``. Keeping ``B = kappa b`` with a per-parameter
scale ``kappa`` (``state["momentum_buffer_scale"]``), one kernel call is one QHM step when
``kappa' = sqrt(nu kappa / ((1 - nu) beta))``, ``mu = nu / ((1 - nu) kappa')``,
``1 - tau = kappa' (1 - beta)`` and ``lr' = lr (1 - nu)`` (kappa settles at
``nu / ((1 - nu) beta)`` and follows a momentum that a scheduler moves). ``nu = 1`` and
``beta = 0`` use the kernel without Nesterov; ``nu = 0`` uses the for-loop. Both paths keep
the same state, so a checkpoint moves between them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import (
    CheckedOptimizer,
    evaluate_closure,
    group_by_device_dtype,
    param_layout,
    real_view,
    runs_by,
    use_fused_sgd,
)

__all__ = ["QHM", "qhm"]


class QHM(CheckedOptimizer):
    r"""Quasi-hyperbolic momentum (Ma & Yarats, ICLR 2019).

    Args:
        params: parameters or parameter groups (each may set its own ``lr``, ``momentum``,
            ``nu``, ``weight_decay``).
        lr: the learning rate ``alpha`` (compare with SGD momentum's ``lr / (1 - beta)``).
        momentum: ``beta``, the EMA factor of the momentum buffer, in [0, 1).
        nu: ``nu``, the weight of the momentum buffer in the step, in [0, 1].
        weight_decay: coupled L2 penalty added to the gradient (qhoptim's default).
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused SGD kernel (default: where the tensors allow). ``False``
            forces the for-loop.

    ``MomentumScheduler`` schedules ``group["momentum"]`` (``beta``); ``nu`` stays. Exactness:
    with ``fused=False``, ``nu=0`` equals ``torch.optim.SGD(momentum=0, foreach=False)`` bit for
    bit (both paths), and ``nu=1`` equals ``b = beta b + (1 - beta) g; theta -= lr b`` written
    as tensor ops bit for bit; the fused path equals them to float rounding.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.999,
        nu: float = 0.7,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nu": nu,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        _checks.learning_rate("lr", group["lr"])
        _checks.unit_interval("momentum", group["momentum"])
        _checks.closed_unit_interval("nu", group["nu"])
        _checks.nonnegative("weight_decay", group["weight_decay"])
        _checks.flag("maximize", group["maximize"])
        use_fused_sgd(group["fused"], group["params"], complex_ok=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step."""
        loss = evaluate_closure(closure)
        for group, batch in self._gather_groups():
            states = [self.state[p] for p in batch.keys]
            buffers = [s.get("momentum_buffer") for s in states]
            scales = [s.get("momentum_buffer_scale") for s in states]
            if batch.complex:
                buffers = [None if b is None else real_view(b) for b in buffers]
            qhm(
                batch.params,
                batch.grads,
                buffers,
                scales,
                lr=group["lr"],
                momentum=group["momentum"],
                nu=group["nu"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                fused=use_fused_sgd(group["fused"], batch.params),
            )
            if batch.complex:
                buffers = [param_layout(b, p) for b, p in zip(buffers, batch.keys, strict=True)]
            for state, buf, scale in zip(states, buffers, scales, strict=True):
                state["momentum_buffer"] = buf
                state["momentum_buffer_scale"] = scale
        return loss


def qhm(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    buffer_scales: list[float | None],
    *,
    lr: float,
    momentum: float,
    nu: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
    fused: bool = False,
) -> None:
    """One QHM step (functional form of :class:`QHM`).

    ``momentum_buffers[i]`` holds ``kappa_i * b_i`` with ``kappa_i = buffer_scales[i]``; both
    lists are updated in place (a ``None`` entry, a parameter's first step, is created).
    """
    if fused and nu != 0:
        _qhm_fused(
            params, grads, momentum_buffers, buffer_scales, lr, momentum, nu, weight_decay, maximize
        )
    else:
        _qhm_loop(
            params, grads, momentum_buffers, buffer_scales, lr, momentum, nu, weight_decay, maximize
        )


def _qhm_loop(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    buffer_scales: list[float | None],
    lr: float,
    beta: float,
    nu: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """The equations op by op: ``B = beta B + kappa (1 - beta) g``, ``B = kappa b``."""
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        g = grad.neg() if maximize else grad
        if weight_decay != 0:
            g = g.add(param, alpha=weight_decay)
        buf = momentum_buffers[i]
        if buf is None:
            buf = torch.zeros_like(param, memory_format=torch.preserve_format)
            momentum_buffers[i], buffer_scales[i] = buf, 1.0
        kappa = buffer_scales[i]
        assert kappa is not None
        buf.mul_(beta).add_(g, alpha=kappa * (1 - beta))
        if nu == 0:
            param.add_(g, alpha=-lr)
        elif nu == 1:
            param.add_(buf, alpha=-lr / kappa)
        else:  # the order of qhoptim: the momentum part, then the gradient part
            param.add_(buf, alpha=-lr * nu / kappa).add_(g, alpha=-lr * (1 - nu))


def _qhm_fused(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    buffer_scales: list[float | None],
    lr: float,
    beta: float,
    nu: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One ``torch._fused_sgd_`` call per run of parameters sharing their buffer scale."""
    fresh_scale = 1.0 if beta == 0 or nu == 1 else nu / ((1 - nu) * beta)
    for i, buf in enumerate(momentum_buffers):
        if buf is None:
            momentum_buffers[i] = torch.zeros_like(params[i], memory_format=torch.preserve_format)
            buffer_scales[i] = fresh_scale
    for kappa, idx in runs_by(buffer_scales).items():
        if beta == 0:  # b = g and theta -= lr g: the kernel's first-step branch does exactly that
            new_kappa = 1.0
            kernel = {"momentum": 1.0, "dampening": 0.0, "lr": lr, "nesterov": False}
            first = True
        elif nu == 1:  # theta -= lr b = (lr / kappa) B
            new_kappa = kappa
            kernel = {
                "momentum": beta,
                "dampening": 1 - kappa * (1 - beta),
                "lr": lr / kappa,
                "nesterov": False,
            }
            first = False
        else:
            new_kappa = math.sqrt(nu * kappa / ((1 - nu) * beta))
            kernel = {
                "momentum": nu / ((1 - nu) * new_kappa),
                "dampening": 1 - new_kappa * (1 - beta),
                "lr": lr * (1 - nu),
                "nesterov": True,
            }
            first = False
        runs_by_type = group_by_device_dtype(
            [params[i] for i in idx], [grads[i] for i in idx], [momentum_buffers[i] for i in idx]
        )
        for p_run, g_run, b_run in runs_by_type:
            torch._fused_sgd_(
                p_run,
                g_run,
                b_run,
                weight_decay=weight_decay,
                maximize=maximize,
                is_first_step=first,
                **kernel,
            )
        for i in idx:
            buffer_scales[i] = new_kappa
