r"""Demon Adam: Adam whose first-moment momentum follows a schedule (Demon by default).

Paper form (Chen et al., Algorithm 2; ``damped=False``, the default), with ``t`` the
parameter's update count and :math:`\beta_k` = ``schedules.demon(k, T, beta_init)``:

.. math::

    m_t = \beta_k m_{t-1} + g, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2, \qquad
    \theta \leftarrow \theta - \eta\, \frac{m_t}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

The first moment is *undamped* (no ``1 - beta`` factor and no bias correction on it): beta
changes how long a gradient is remembered, not how much of it enters. EMA form
(``damped=True``), exactly bias-corrected for a moving beta with the running product
:math:`P_t = \prod_{i \le t} \beta_i` (torch NAdam's trick):

.. math::

    m_t = \beta_k m_{t-1} + (1-\beta_k) g, \qquad
    \theta \leftarrow \theta - \eta\, \frac{m_t / (1 - P_t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

How it runs fast: both forms are written as torch's fused Adam kernel acting on a *scaled*
first moment ``exp_avg = s * m`` (``s`` kept per parameter), so one pass over memory does
the whole update, as torch's ``Adam(fused=True)``. For the undamped form, with
``s' = s / (beta + s)``, the kernel's EMA ``exp_avg <- (1 - s') exp_avg + s' g`` is exactly
``s' (beta m + g)``; for the damped form ``s = 1`` and ``P`` enters through the step size.
The kernel's own bias corrections are switched off (its step count is +inf, so
``1 - beta**step = 1``) and ours are folded into its learning rate and epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import (
    STEP_KEY,
    Gathered,
    ScheduleArg,
    ScheduledMomentumOptimizer,
    outside_compile,
    real_view,
    runs_by,
    scalars_on,
    use_fused,
)
from ._fused_adam import fused_adam

__all__ = ["DemonAdam", "DemonAdamW"]


class DemonAdam(ScheduledMomentumOptimizer):
    r"""Adam with decaying first-moment momentum (Demon Adam, Chen et al. 2019, Algorithm 2).

    Args:
        params: parameters or parameter groups (each may set its own ``betas``,
            ``total_steps``, ``schedule``, ...).
        lr: learning rate. In the default undamped form the first moment grows to about
            ``g / (1 - beta_init)``, so ``lr`` about ``(1 - beta_init)`` times Adam's gives
            Adam-sized early steps (e.g. 1e-4 where Adam uses 1e-3 with beta_init 0.9). As
            beta decays to 0 the step shrinks towards ``lr * g / sqrt(v_hat)``: an implicit
            step-size decay by about ``1 - beta_init``.
        betas: ``(beta_init, beta2)``; only ``beta_init`` is scheduled.
        eps: added to ``sqrt(v_hat)`` (outside the root, as torch).
        weight_decay: coupled L2 (added to the gradient) unless ``decoupled_weight_decay``.
        total_steps: ``T``, the number of ``step()`` calls over which momentum decays;
            ``None`` leaves it to :meth:`set_total_steps` (a framework's callback).
        decoupled_weight_decay: AdamW-style ``theta *= 1 - lr * weight_decay`` before the
            update (with the undamped form's smaller lr, the decay is smaller too).
        damped: use the EMA first moment with exact bias correction instead of the paper's
            undamped one. ``damped=True, schedule="constant"`` is torch's Adam.
        schedule: a name from :data:`demon_optim.schedules.SCHEDULES` or a callable
            ``(k, T, beta_init) -> beta``.
        delay: fraction of the run to hold ``beta_init`` before Demon's decay starts.
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused Adam kernel (default: where the tensors allow).

    A complex parameter is updated as its real view (as torch's Adam); sparse gradients are
    refused (``RuntimeError: DemonAdam does not support sparse gradients``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        total_steps: int | None = None,
        decoupled_weight_decay: bool = False,
        damped: bool = False,
        schedule: ScheduleArg = "demon",
        delay: float = 0.0,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "total_steps": total_steps,
            "decoupled_weight_decay": decoupled_weight_decay,
            "damped": damped,
            "schedule": schedule,
            "delay": delay,
            "maximize": maximize,
            "fused": fused,
            STEP_KEY: 0,
        }
        super().__init__(params, defaults)

    def _beta_init(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        beta1, beta2 = _checks.pair(
            "betas", group["betas"], "a pair (beta_init, beta2) of numbers in [0, 1)"
        )
        _checks.unit_interval("betas[0]", beta1)
        _checks.unit_interval("betas[1]", beta2)
        _checks.nonnegative("eps", group["eps"], tensor_ok=True)
        _checks.nonnegative("weight_decay", group["weight_decay"], tensor_ok=True)
        _checks.flag("decoupled_weight_decay", group["decoupled_weight_decay"])
        _checks.flag("damped", group["damped"])
        _checks.flag("maximize", group["maximize"])
        use_fused(group["fused"], group["params"], complex_ok=True)

    def _update_group(
        self, group: dict[str, Any], batch: Gathered, beta: Any, compiling: bool
    ) -> None:
        params, grads = batch.params, batch.grads
        if compiling:
            coefficients = self._advance_moments(
                group, batch.keys, beta, as_tensors=True, views=batch.complex
            )
            _adam_loop(params, grads, coefficients, group)
            return
        coefficients = self._advance_moments(group, batch.keys, beta, views=batch.complex)
        if use_fused(group["fused"], params) and not isinstance(group["lr"], Tensor):
            _adam_fused(params, grads, coefficients, group)
        else:
            _adam_loop(params, grads, coefficients, group)

    @outside_compile
    def _advance_moments(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        beta: Any,
        as_tensors: bool = False,
        views: bool = False,
    ) -> list[tuple[Tensor, Tensor, Any, Any, Any]]:
        """Advance each parameter's counters and return its update coefficients.

        For each parameter: ``(exp_avg, exp_avg_sq, w, bc2, s)`` where the first moment is
        updated as ``exp_avg.lerp_(g, w)``, ``bc2 = 1 - beta2**t`` and the step uses
        ``exp_avg / s``; with ``views`` (some parameter is complex) the moments come as
        real views, like the parameters. Kept out of ``torch.compile`` (Python numbers that
        change every step); ``as_tensors`` gives the coefficients as 0-d float64 tensors
        on each parameter's device, the compiled update's inputs (:func:`scalars_on`).
        """
        beta = float(beta)
        beta2 = group["betas"][1]
        out = []
        coefficients = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["beta1_product" if group["damped"] else "exp_avg_scale"] = 1.0
            state["step"] += 1
            bc2 = 1.0 - beta2 ** state["step"]
            if group["damped"]:
                # m = beta m + (1 - beta) g; the step divides by 1 - prod(beta_i)
                w = 1.0 - beta
                state["beta1_product"] *= beta
                s = 1.0 - state["beta1_product"]
            else:
                # exp_avg = s m with s' = s / (beta + s): lerp by s' gives s' (beta m + g)
                s = state["exp_avg_scale"] / (beta + state["exp_avg_scale"])
                w = s
                state["exp_avg_scale"] = s
            coefficients.append((w, bc2, s))
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            if views:
                exp_avg, exp_avg_sq = real_view(exp_avg), real_view(exp_avg_sq)
            out.append((exp_avg, exp_avg_sq))
        if as_tensors:
            flat = scalars_on(
                [c for coeffs in coefficients for c in coeffs],
                [p.device for p in params for _ in range(3)],
            )
            coefficients = [tuple(flat[3 * i : 3 * i + 3]) for i in range(len(params))]
        return [(*moments, *c) for moments, c in zip(out, coefficients, strict=True)]


class DemonAdamW(DemonAdam):
    """:class:`DemonAdam` with decoupled weight decay (default 1e-2), as torch's AdamW."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        total_steps: int | None = None,
        decoupled_weight_decay: bool = True,
        damped: bool = False,
        schedule: ScheduleArg = "demon",
        delay: float = 0.0,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            total_steps=total_steps,
            decoupled_weight_decay=decoupled_weight_decay,
            damped=damped,
            schedule=schedule,
            delay=delay,
            maximize=maximize,
            fused=fused,
        )


def _adam_loop(
    params: list[Tensor],
    grads: list[Tensor],
    coefficients: list[tuple[Tensor, Tensor, Any, Any, Any]],
    group: dict[str, Any],
) -> None:
    """The update written out op by op: the reference path, and the one torch.compile traces.

    The coefficients are floats, or 0-d tensors under torch.compile.
    """
    lr, eps, wd, beta2 = group["lr"], group["eps"], group["weight_decay"], group["betas"][1]
    for param, grad, (exp_avg, exp_avg_sq, w, bc2, s) in zip(
        params, grads, coefficients, strict=True
    ):
        g = grad.neg() if group["maximize"] else grad
        if wd != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * wd)
            else:
                g = g.add(param, alpha=wd)
        exp_avg.lerp_(g, w)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if isinstance(bc2, Tensor):
            denom = (exp_avg_sq.sqrt() / bc2.sqrt()).add_(eps)
            param.sub_(exp_avg / denom * (lr / s))
        else:
            denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr / s)


def _adam_fused(
    params: list[Tensor],
    grads: list[Tensor],
    coefficients: list[tuple[Tensor, Tensor, float, float, float]],
    group: dict[str, Any],
) -> None:
    """torch's fused Adam kernel, one call per run of parameters sharing their coefficients.

    With the kernel's bias corrections off, it computes
    ``theta -= lr' * exp_avg / (sqrt(v) + eps')``; we want
    ``theta -= lr * (exp_avg / s) / (sqrt(v / bc2) + eps)``, hence
    ``lr' = lr sqrt(bc2) / s`` and ``eps' = eps sqrt(bc2)``.
    """
    lr = group["lr"]
    for (w, bc2, s), idx in runs_by(c[2:] for c in coefficients).items():
        root = math.sqrt(bc2)
        fused_adam(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [coefficients[i][0] for i in idx],
            [coefficients[i][1] for i in idx],
            lr=lr,
            kernel_lr=lr * root / s,
            beta1=1.0 - w,
            beta2=group["betas"][1],
            root=root,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )
