r"""QHAdam: quasi-hyperbolic Adam (Ma & Yarats, "Quasi-hyperbolic momentum and Adam for deep
learning", ICLR 2019).

With ``t`` the parameter's own update count and ``g`` the gradient (after ``maximize`` and
coupled weight decay):

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g^2,
    \qquad \hat m = \frac{m_t}{1 - \prod_{i \le t} \beta_{1,i}}, \qquad
    \hat v = \frac{v_t}{1 - \beta_2^t}

.. math::

    \theta \leftarrow \theta - \alpha\,
        \frac{(1-\nu_1) g + \nu_1 \hat m}{\sqrt{(1-\nu_2) g^2 + \nu_2 \hat v} + \epsilon}

``nus = (1, 1)`` is Adam. Choices: eps is added outside the square root (qhoptim and torch);
weight decay is coupled by default, or decoupled (``theta *= 1 - lr * weight_decay`` before the
update, qhoptim's ``decouple_weight_decay``). The first moment's bias correction uses the
running product of the beta1 values this parameter was updated with (torch NAdam's trick;
qhoptim gets the same effect with its ``beta1_weight``), which is ``1 - beta1**t`` for a
constant beta1 and stays exact when a ``MomentumScheduler`` moves ``betas[0]`` (torch's Adam
would use the current beta1, which is wrong once it moves). The paper recommends
``nus = (0.7, 1.0)`` with ``betas = (0.995, 0.999)``.

How it runs fast (``nu2 = 1`` and ``nu1 > 0``): torch's fused Adam kernel, with its bias
corrections off (step = +inf) and ours folded into its lr and eps, computes
``e = lerp(e, g, 1 - b); theta -= lr' e / (sqrt(v) + eps')``. The numerator
``(1-nu1) g + nu1 m_t / bc1`` is ``A m_{t-1} + B g`` with ``A = nu1 beta1 / bc1`` and
``B = nu1 (1-beta1) / bc1 + 1 - nu1``, so a call with ``b = A / (A + B)`` and
``lr' = lr (A + B) sqrt(bc2)`` makes the QHAdam step, leaving ``e = lerp(m_{t-1}, g, B/(A+B))``;
one more pass, ``m_t = lerp(e, g, -bc1 (1 - nu1) / nu1)``, restores the first moment. The two
passes run batch by batch so that the second one reads from cache. ``nu1 = 1`` needs no second
pass; ``nu2 != 1`` and ``nu1 < 0.25`` use the for-loop.

``compiled=True`` instead runs the whole update, for any ``nus``, as one pass per tensor that
``torch.compile`` (inductor) generates: as fast as torch's fused Adam, at the price of a
compilation on the first step (tens of seconds on a CPU; it needs a C++ compiler there) and
one more whenever the list of parameters with gradients changes (torch's recompile limit, 8
by default, then applies).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import _checks
from ..errors import invalid
from ._base import (
    CheckedOptimizer,
    effective_grads,
    evaluate_closure,
    group_by_device_dtype,
    host_to_device,
    real_view,
    runs_by,
    use_fused,
)
from ._fused_adam import fused_adam

__all__ = ["QHAdam"]

# Below this nu1 the restoring lerp, m = lerp(e, g, -bc1 (1 - nu1) / nu1), would amplify the
# kernel's rounding of e by more than 1 + (1 - nu1) / nu1 = 4: the for-loop is used instead.
MIN_FUSED_NU1 = 0.25


class QHAdam(CheckedOptimizer):
    r"""Quasi-hyperbolic Adam (Ma & Yarats, ICLR 2019).

    Args:
        params: parameters or parameter groups (each may set its own ``lr``, ``betas``,
            ``nus``, ...).
        lr: learning rate.
        betas: ``(beta1, beta2)``, each in [0, 1).
        nus: ``(nu1, nu2)``, each in [0, 1]; ``(1, 1)`` is Adam.
        eps: added to the denominator, outside the square root.
        weight_decay: coupled L2 (added to the gradient) unless ``decoupled_weight_decay``.
        decoupled_weight_decay: ``theta *= 1 - lr * weight_decay`` before the update.
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused Adam kernel (default: where the tensors allow and the
            settings fit it, see the module docstring). ``False`` forces the for-loop.
        compiled: run the update as one ``torch.compile``-generated pass per tensor (any
            ``nus``; compiles on the first step). Excludes ``fused=True``.

    ``MomentumScheduler`` schedules ``betas[0]``, with exact bias correction. Exactness: with
    ``nus=(1, 1)`` and ``fused=False`` this is ``torch.optim.Adam(foreach=False)`` (or AdamW
    with ``decoupled_weight_decay``) bit for bit in our tests; the fused path equals it to
    float rounding.
    """

    # state dicts saved before ``compiled`` existed
    optional_group_keys: ClassVar[Mapping[str, Any]] = MappingProxyType({"compiled": False})

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        nus: tuple[float, float] = (1.0, 1.0),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        fused: bool | None = None,
        compiled: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "nus": nus,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "fused": fused,
            "compiled": compiled,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        _checks.learning_rate("lr", group["lr"])
        beta1, beta2 = _checks.pair("betas", group["betas"], "a pair (beta1, beta2) in [0, 1)")
        _checks.unit_interval("betas[0]", beta1)
        _checks.unit_interval("betas[1]", beta2)
        nu1, nu2 = _checks.pair("nus", group["nus"], "a pair (nu1, nu2) in [0, 1]")
        _checks.closed_unit_interval("nus[0]", nu1)
        _checks.closed_unit_interval("nus[1]", nu2)
        _checks.nonnegative("eps", group["eps"])
        _checks.nonnegative("weight_decay", group["weight_decay"])
        _checks.flag("decoupled_weight_decay", group["decoupled_weight_decay"])
        _checks.flag("maximize", group["maximize"])
        if _checks.flag("compiled", group.get("compiled", False)) and group["fused"]:
            raise invalid("fused", group["fused"], "None or False with compiled=True")
        use_fused(group["fused"], group["params"], complex_ok=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step."""
        loss = evaluate_closure(closure)
        for group, batch in self._gather_groups():
            params, grads = batch.params, batch.grads
            moments = self._advance(group, batch.keys, views=batch.complex)
            nu1, nu2 = group["nus"]
            if group.get("compiled", False):
                _qhadam_compiled(params, grads, moments, group)
            elif use_fused(group["fused"], params) and nu2 == 1 and nu1 >= MIN_FUSED_NU1:
                _qhadam_fused(params, grads, moments, group)
            else:
                _qhadam_loop(params, grads, moments, group)
        return loss

    def _advance(
        self, group: dict[str, Any], params: list[Tensor], views: bool = False
    ) -> list[tuple[Tensor, Tensor, float, float]]:
        """Advance each parameter's counters: ``(exp_avg, exp_avg_sq, bc1, bc2)`` per parameter
        (with ``views``, some parameter is complex: the moments come as real views)."""
        beta1, beta2 = group["betas"]
        out = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["beta1_product"] = 1.0
            state["step"] += 1
            state["beta1_product"] *= beta1
            bc1 = 1.0 - state["beta1_product"]
            bc2 = 1.0 - beta2 ** state["step"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            if views:
                exp_avg, exp_avg_sq = real_view(exp_avg), real_view(exp_avg_sq)
            out.append((exp_avg, exp_avg_sq, bc1, bc2))
        return out


def _qhadam_loop(
    params: list[Tensor],
    grads: list[Tensor],
    moments: list[tuple[Tensor, Tensor, float, float]],
    group: dict[str, Any],
) -> None:
    """The update op by op (for ``nus=(1, 1)``: torch's single-tensor Adam, op for op)."""
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    (beta1, beta2), (nu1, nu2) = group["betas"], group["nus"]
    for param, grad, (exp_avg, exp_avg_sq, bc1, bc2) in zip(params, grads, moments, strict=True):
        g = grad.neg() if group["maximize"] else grad
        if wd != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * wd)
            else:
                g = g.add(param, alpha=wd)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if nu2 == 1:
            denom = (exp_avg_sq.sqrt() / bc2**0.5).add_(eps)
        else:
            denom = exp_avg_sq.mul(nu2 / bc2).addcmul_(g, g, value=1 - nu2).sqrt_().add_(eps)
        if nu1 == 1:
            param.addcdiv_(exp_avg, denom, value=-(lr / bc1))
        else:
            numerator = g.mul(1 - nu1).add_(exp_avg, alpha=nu1 / bc1)
            param.addcdiv_(numerator, denom, value=-lr)


def _qhadam_fused(
    params: list[Tensor],
    grads: list[Tensor],
    moments: list[tuple[Tensor, Tensor, float, float]],
    group: dict[str, Any],
) -> None:
    """torch's fused Adam kernel plus, for ``nu1 < 1``, one lerp that restores ``m``."""
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    nu1 = group["nus"][0]
    decoupled, maximize = group["decoupled_weight_decay"], group["maximize"]
    restore = nu1 != 1 and beta1 != 0  # beta1 = 0: the kernel leaves e = g = m already
    if restore and (maximize or (wd != 0 and not decoupled)):
        # the restoring lerp needs the gradient the kernel used
        grads = effective_grads(params, grads, 0.0 if decoupled else wd, maximize)
        maximize = False
        if not decoupled:
            wd = 0.0
    for (bc1, bc2), idx in runs_by(m[2:] for m in moments).items():
        if nu1 == 1:
            total, kernel_beta1 = 1.0 / bc1, beta1
        else:
            a = nu1 * beta1 / bc1
            total = nu1 / bc1 + 1.0 - nu1
            kernel_beta1 = a / total
        root = bc2**0.5
        fused_adam(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [moments[i][0] for i in idx],
            [moments[i][1] for i in idx],
            lr=lr,
            kernel_lr=lr * total * root,
            beta1=kernel_beta1,
            beta2=beta2,
            root=root,
            eps=eps,
            weight_decay=wd,
            decoupled=decoupled,
            maximize=maximize,
            restore=-bc1 * (1.0 - nu1) / nu1 if restore else None,
        )


def _one_pass(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scalars: Tensor,
    decoupled: bool,
    maximize: bool,
    weight_decay: bool,
) -> None:
    """The whole QHAdam update, written for ``torch.compile`` to fuse into one pass per tensor.

    ``scalars`` is ``(lr, beta1, beta2, nu1, nu2, bc1, bc2, eps, weight_decay)``: as a tensor
    they are graph inputs, so new learning rates, betas or bias corrections do not recompile.
    """
    lr, beta1, beta2, nu1, nu2, bc1, bc2, eps, wd = scalars.unbind()
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        g = -grad if maximize else grad
        if weight_decay and decoupled:
            param.mul_(1 - lr * wd)
        elif weight_decay:
            g = g + wd * param
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).add_((1 - beta2) * g * g)
        numerator = (1 - nu1) * g + (nu1 / bc1) * exp_avg
        denom = ((1 - nu2) * g * g + (nu2 / bc2) * exp_avg_sq).sqrt() + eps
        param.sub_(lr * numerator / denom)


@functools.cache
def _compiled_one_pass() -> Callable[..., None]:
    """``_one_pass`` compiled once per process (torch.compile is imported only when used)."""
    return torch.compile(_one_pass, fullgraph=True)


def _qhadam_compiled(
    params: list[Tensor],
    grads: list[Tensor],
    moments: list[tuple[Tensor, Tensor, float, float]],
    group: dict[str, Any],
) -> None:
    """One compiled call per run of parameters that share device, dtype and bias corrections."""
    (beta1, beta2), (nu1, nu2) = group["betas"], group["nus"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    update = _compiled_one_pass()
    for (bc1, bc2), idx in runs_by(m[2:] for m in moments).items():
        for p_run, g_run, m_run, v_run in group_by_device_dtype(
            [params[i] for i in idx],
            [grads[i] for i in idx],
            [moments[i][0] for i in idx],
            [moments[i][1] for i in idx],
        ):
            # on the parameters' device, queued without a host sync (see host_to_device)
            scalars = host_to_device(
                [lr, beta1, beta2, nu1, nu2, bc1, bc2, eps, wd], p_run[0].device
            )
            update(
                p_run,
                g_run,
                m_run,
                v_run,
                scalars,
                decoupled=group["decoupled_weight_decay"],
                maximize=group["maximize"],
                weight_decay=wd != 0,
            )
