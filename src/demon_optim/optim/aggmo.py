r"""AggMo: aggregated momentum (Lucas, Sun, Zemel, Grosse, "Aggregated Momentum: Stability
Through Passive Damping", ICLR 2019).

``K`` velocity buffers with different damping factors ``beta_i``, averaged. Paper form:
``v_i <- beta_i v_i - g``, ``theta <- theta + (lr / K) sum_i v_i``. We keep torch SGD's sign
convention (as the authors' PyTorch code), identical in exact arithmetic:

.. math::

    b_i \leftarrow \beta_i b_i + g \quad (b_i = 0 \text{ at the start}), \qquad
    \theta \leftarrow \theta - \frac{\alpha}{K} \sum_{i=1}^{K} b_i

with ``g`` the gradient after ``maximize`` (negation) and coupled weight decay
(``g += weight_decay * theta``, computed once per step from the parameters before the update).
The update adds the buffers' terms one after the other, in the order of ``betas``, as the
authors' code. With a single beta this is torch SGD with that momentum bit for bit (its first
buffer, ``0 * beta + g``, is torch's ``buf = g``). The buffers are a list in
``state["momentum_buffers"]``, kept **by index**: the authors' code keyed them by the float
beta values, so any change of a beta (a schedule) silently started a fresh zero buffer.

Scheduling the momentum. ``betas[0]`` is usually 0, so a scheduler moving it (torch's
``OneCycleLR(cycle_momentum=True)`` would) is meaningless. AggMo instead declares
``momentum_key = "momentum"``: ``group["momentum"]`` (default: the largest beta) is a handle
on the whole set. The betas applied are

.. math::

    \frac{\beta_i'}{1 - \beta_i'} = r \frac{\beta_i}{1 - \beta_i}, \qquad
    r = \frac{m / (1 - m)}{\beta_{max} / (1 - \beta_{max})}

with ``m = group["momentum"]``: each beta keeps its share of the total future weight
``beta / (1 - beta)`` of a gradient. Demon decays exactly that weight linearly, so a Demon
``MomentumScheduler`` on AggMo applies Demon to every beta: ``beta_i'(k) = demon(k, T, beta_i)``
(to float rounding). ``group["betas"]`` keeps the user's values; :meth:`AggMo.get_last_betas`
reports the applied ones. A zero beta stays zero.

How it runs fast: one call of torch's fused SGD kernel per buffer (``momentum = beta_i``,
``lr / K``; a zero beta uses the kernel's first-step branch, ``b = g``), batch by batch so
that the K calls re-read parameters and gradients from cache: K passes, as K torch SGD steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import _checks
from ..errors import invalid
from ._base import (
    CheckedOptimizer,
    cache_batches,
    effective_grads,
    evaluate_closure,
    group_by_device_dtype,
    real_view,
    use_fused_sgd,
)

__all__ = ["AggMo", "applied_betas"]


def applied_betas(betas: Sequence[float], momentum: float) -> tuple[float, ...]:
    """The betas applied when the largest beta is moved to ``momentum`` (odds scaled alike)."""
    top = max(betas)
    if momentum == top:
        return tuple(betas)
    if top == 0:
        return tuple(0.0 for _ in betas)
    ratio = (momentum / (1 - momentum)) / (top / (1 - top))
    return tuple(ratio * b / ((1 - b) + ratio * b) for b in betas)


class AggMo(CheckedOptimizer):
    r"""Aggregated momentum (Lucas et al., ICLR 2019).

    Args:
        params: parameters or parameter groups (each may set its own ``lr``, ``betas``, ...).
        lr: learning rate (the step is ``lr / K`` times the sum of the K buffers).
        betas: the K damping factors, each in [0, 1). The paper's default ``(0, 0.9, 0.99)``
            is its ``beta_i = 1 - a**(i - 1)`` with ``a = 0.1``, ``K = 3``. The number of
            betas is fixed once a parameter has buffers; their values may change.
        weight_decay: coupled L2 penalty added to the gradient.
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused SGD kernel (default: where the tensors allow). ``False``
            forces the for-loop.

    Each group also holds ``"momentum"``, the momentum-schedule handle (the largest beta by
    default, see the module docstring); ``MomentumScheduler`` moves it.
    """

    momentum_key = "momentum"
    required_group_keys: ClassVar[tuple[str, ...]] = ("momentum",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.0, 0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, list) else betas,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        _checks.learning_rate("lr", group["lr"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or not betas:
            raise invalid("betas", betas, "a non-empty tuple of numbers in [0, 1)")
        for i, beta in enumerate(betas):
            _checks.unit_interval(f"betas[{i}]", beta)
        if group.get("momentum") is None:
            group["momentum"] = max(betas)
        _checks.unit_interval("momentum", group["momentum"])
        _checks.nonnegative("weight_decay", group["weight_decay"])
        _checks.flag("maximize", group["maximize"])
        use_fused_sgd(group["fused"], group["params"], complex_ok=True)

    def get_last_betas(self) -> list[tuple[float, ...]]:
        """The betas applied at the last (or, before any, the next) step, one tuple per group."""
        return [applied_betas(g["betas"], g["momentum"]) for g in self.param_groups]

    def get_last_momentum(self) -> list[float]:
        """The largest applied beta per group (``group["momentum"]``, the schedule handle)."""
        return [float(g["momentum"]) for g in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step."""
        loss = evaluate_closure(closure)
        # everything checked before any group changes: a step that raises changes nothing
        work = []
        for group, batch in self._gather_groups():
            betas = applied_betas(group["betas"], group["momentum"])
            buffers = [self.state[p].get("momentum_buffers") for p in batch.keys]
            for bufs in buffers:
                if bufs is not None and len(bufs) != len(betas):
                    raise invalid(
                        "betas",
                        group["betas"],
                        f"{len(bufs)} values: the number of buffers is fixed once training "
                        "has started",
                    )
            work.append((group, batch, betas, buffers))
        for group, batch, betas, buffers in work:
            for i, p in enumerate(batch.keys):
                if buffers[i] is None:
                    buffers[i] = self.state[p]["momentum_buffers"] = [
                        torch.zeros_like(p, memory_format=torch.preserve_format) for _ in betas
                    ]
            if batch.complex:
                buffers = [[real_view(b) for b in bufs] for bufs in buffers]
            aggmo(
                batch.params,
                batch.grads,
                buffers,
                lr=group["lr"],
                betas=betas,
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                fused=use_fused_sgd(group["fused"], batch.params),
            )
        return loss


def aggmo(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[list[Tensor]],
    *,
    lr: float,
    betas: Sequence[float],
    weight_decay: float = 0.0,
    maximize: bool = False,
    fused: bool = False,
) -> None:
    """One AggMo step (functional form of :class:`AggMo`); buffers are updated in place."""
    scale = lr / len(betas)
    if not fused:
        for param, grad, bufs in zip(params, grads, momentum_buffers, strict=True):
            g = grad.neg() if maximize else grad
            if weight_decay != 0:
                g = g.add(param, alpha=weight_decay)
            for beta, buf in zip(betas, bufs, strict=True):
                buf.mul_(beta).add_(g)
                param.add_(buf, alpha=-scale)
        return
    if weight_decay != 0 and len(betas) > 1:
        # from the second call on the kernel would add weight_decay * theta, theta already moved
        grads = effective_grads(params, grads, weight_decay, maximize)
        weight_decay, maximize = 0.0, False
    for p_run, g_run, b_run in group_by_device_dtype(params, grads, momentum_buffers):
        for batch in cache_batches(p_run):
            ps, gs = [p_run[j] for j in batch], [g_run[j] for j in batch]
            for i, beta in enumerate(betas):
                torch._fused_sgd_(
                    ps,
                    gs,
                    [b_run[j][i] for j in batch],
                    weight_decay=weight_decay,
                    momentum=beta if beta != 0 else 1.0,
                    lr=scale,
                    dampening=0.0,
                    nesterov=False,
                    maximize=maximize,
                    is_first_step=beta == 0,  # b = g: the kernel's first-step branch
                )
