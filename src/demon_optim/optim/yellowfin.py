r"""YellowFin: momentum SGD whose learning rate and momentum are tuned on line (Zhang &
Mitliagkas, "YellowFin and the Art of Momentum Tuning", SysML 2019 / arXiv 1706.03471), with
the safeguards of the authors' PyTorch code (github.com/JianGoForIt/YellowFin_Pytorch).

Each step ``t`` (counted from 0) measures, over all parameters together (the tuner is global,
as the paper's):

* curvature range: ``h = ||g||^2``; over a sliding window of the last ``curv_win_width``
  values, ``h_max`` and ``h_min`` are EMAs (factor ``beta``) of the window's max and min. As in
  the authors' code the window holds ``log(h + eps)`` and the EMAs smooth the logs, so
  ``h_max = exp(EMA(max log h))``;
* gradient variance ``C = EMA(||g||^2) - ||EMA(g)||^2`` (sum over coordinates, at least eps);
* distance to the optimum ``D = EMA(EMA(||g||) / EMA(||g||^2))``;
* zero-debiasing (``zero_debias=True``): every EMA above is divided by ``1 - beta**(t+1)``
  (``EMA(g)`` in ``C`` squared, hence by its square);
* sparsity debiasing (``sparsity_debias=True``, for models whose gradients are mostly zeros,
  e.g. word embeddings): with ``s = EMA(nnz(g) / numel(g)) / (1 - beta**(t+1))`` (debiased
  whether or not ``zero_debias`` is set, as in the authors' code), ``h_min``, ``h_max`` and
  ``C`` are multiplied by ``s`` and ``D`` is divided by ``sqrt(s) + eps``: the norms of sparse
  gradients overstate those of their average by about ``1 / sqrt(s)``.

Then SingleStep (from the second step): ``x = sqrt(mu)`` minimises
``x^2 D^2 + (1 - x)^4 C / h_min^2``; with ``y = x - 1`` this is the cubic
``y^3 + p y + p = 0``, ``p = D^2 h_min^2 / (2 C)``, whose real root comes from Vieta's
substitution ``w^3 = (-p - sqrt(p^2 + 4 p^3 / 27)) / 2``, ``y = w - p / (3 w)``. (eps = 1e-6
is added to ``D``, ``h_min``, ``C``, ``w`` and ``h_max`` in these formulas, as in the authors'
code.) Then

.. math::

    \mu^* = \max\left(x^2, \left(\frac{\sqrt{h_{max}/h_{min}} - 1}
                                        {\sqrt{h_{max}/h_{min}} + 1}\right)^2\right),
    \qquad \alpha^* = \frac{(1 - \sqrt{\mu^*})^2}{h_{min}}

and with ``slow_start=True`` (the authors' code) ``alpha* <- alpha* min(1, (t+1) / (10 w))``,
``w = curv_win_width``: the first ``10 w`` steps ramp the tuned rate up linearly, while few
measurements back it. ``smooth=False`` (the authors' PyTorch code) applies ``mu*, alpha*``
as solved at each step; ``smooth=True`` (the paper's Algorithm 1) applies
``mu <- beta mu + (1 - beta) mu*``, ``alpha <- beta alpha + (1 - beta) alpha*``. The update is
momentum SGD in torch's convention with the tuned values: ``buf = mu buf + g`` (``buf = g`` on
the first step), ``theta -= lr * alpha * buf``; as in torch's SGD (hence the authors' code), a
step with ``mu = 0`` keeps no buffer, so the next one starts again from ``buf = g``
(``restart_at_zero_momentum=False`` keeps ``buf = g`` instead).

Adaptive clipping (``adapt_clip=True``, the authors' default), with ``h_max`` the estimate of
the previous step and ``1e-6`` the guard of ``torch.nn.utils.clip_grad_norm_``:

1. statistics protection, from the third step (``t >= 2``): the gradient is scaled by
   ``min(1, (sqrt(F h_max) + eps) / (||g|| + 1e-6))``, ``F = stat_protect_fac``, before the
   statistics see it (only a gradient 10x the largest recent norm is touched);
2. exploding gradient, from the second step: if ``||g||^2 >= h_max`` (``g`` after 1), the
   update (not the statistics) uses ``g min(1, (sqrt(h_max) + eps) / (||g|| + 1e-6))``;
3. catastrophic move: if the applied ``lr * alpha * ||g|| >= M`` (``g`` after 1, before 2),
   ``M = catastrophic_move_thresh``, the applied learning rate becomes
   ``M / sqrt(||g||^2 + eps)``, this step only.

Choices (stated here and in docs/reference-optimizers.md):

* ``lr`` is a *factor* on the tuned learning rate (the authors' ``lr_factor``), default 1.
  It lives in ``group["lr"]``, so torch's LR schedulers compose with the tuner;
  :meth:`YellowFin.get_last_lr` reports the applied ``lr * alpha`` (capped by 3).
* Defaults: the paper's start and smoothing (``initial_lr=1.0``, ``initial_momentum=0``,
  ``smooth=True``: with ``beta = 0.999`` the start weighs for about a thousand steps) with the
  safeguards of the authors' code (``slow_start``, ``adapt_clip``, torch's buffer rule): the
  best of the variants we measured on the library's small tasks, where the former default
  (``initial_lr=1e-3``, no safeguards) crawled for hundreds of steps. On a tiny ill-scaled
  quadratic the smoothed start from 1.0 overshoots (the move cap keeps it bounded); the
  authors' PyTorch code itself is ``smooth=False`` (the start then applies to the first step
  only). docs/reference-optimizers.md has the measurements. ``initial_lr=1e-3,
  slow_start=False, adapt_clip=False, restart_at_zero_momentum=False`` is this library's
  YellowFin before these options.
* Order within ``step()``: the statistics take this step's gradient, then the tuned values
  are applied to it (the paper's Algorithm 1).
* ``g`` includes ``maximize`` and coupled weight decay, for the update and the statistics
  (the authors' code adds the decay in the update only). Parameters without a gradient on a
  step take no part in that step's statistics.
* Left out: the authors' manual clipping (``clip_thresh``, ``auto_clip_fac``: clip the
  gradient before ``step()``), ``force_non_inc_step`` and their checkpoint-and-restore on
  non-finite statistics; their guard ``h_max / h_min >= 1 + eps`` (``h_max >= h_min`` always;
  it moves mu by at most ``(eps / 4)^2``). ``momentum`` is not a group hyperparameter: there
  is nothing for ``MomentumScheduler`` to move.
* The tuner's state (floats and the window) lives in the first parameter's state under
  ``"yellowfin"`` (as torch's LBFGS keeps its own), so ``state_dict()`` round-trips it; a
  checkpoint from before the clipping options continues as it ran (options off). Torch's
  SGD and Adam groups hold every YellowFin hyperparameter: ``load_state_dict`` refuses a
  state dict without the tuner.
* A complex parameter is measured and updated as its real view (torch's convention), so it
  runs bit for bit as its real view would.
* A non-finite or out-of-range root (extreme statistics) is clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ..errors import ConfigError, invalid
from ._base import (
    CheckedOptimizer,
    cache_batches,
    effective_grads,
    evaluate_closure,
    group_by_device_dtype,
    param_layout,
    real_view,
    use_fused_sgd,
)

__all__ = ["YellowFin", "single_step"]

TUNER_KEY = "yellowfin"
CLIP_GUARD = 1e-6  # torch.nn.utils.clip_grad_norm_'s max_norm / (norm + 1e-6)

# A tuner state saved before these keys existed ran without them: it continues so.
_LEGACY_TUNER = {
    "adapt_clip": False,
    "stat_protect_fac": 100.0,
    "catastrophic_move_thresh": 100.0,
    "sparsity_debias": False,
    "slow_start": False,
    "restart_at_zero_momentum": False,
    "sparsity_avg": 0.0,
    "sparsity": 1.0,
    "grad_norm_squared": 0.0,
}


def single_step(
    h_min: float, h_max: float, grad_var: float, dist_to_opt: float, eps: float = 1e-6
) -> tuple[float, float]:
    """The SingleStep solution ``(mu*, alpha*)`` from the measured statistics (pure)."""
    p = (dist_to_opt + eps) ** 2 * (h_min + eps) ** 2 / 2 / (grad_var + eps)
    w3 = (-math.sqrt(p * p + 4.0 / 27.0 * p * p * p) - p) / 2.0
    w = math.copysign(abs(w3) ** (1.0 / 3.0), w3)
    x = w - p / 3.0 / (w + eps) + 1.0
    x = min(max(x, 0.0), 1.0) if math.isfinite(x) else 0.0
    ratio = math.sqrt((h_max + eps) / (h_min + eps))
    mu = max(x * x, ((ratio - 1.0) / (ratio + 1.0)) ** 2)
    lr = (1.0 - math.sqrt(mu)) ** 2 / (h_min + eps)
    return mu, lr


def clip_factor(norm: float, limit: float) -> float:
    """``min(1, limit / (norm + 1e-6))``: the scale ``clip_grad_norm_(limit)`` applies."""
    return min(1.0, limit / (norm + CLIP_GUARD))


class YellowFin(CheckedOptimizer):
    r"""YellowFin (Zhang & Mitliagkas): momentum SGD with a closed-loop lr/momentum tuner.

    Args:
        params: parameters or parameter groups (each may set its own ``lr`` factor,
            ``weight_decay``, ``maximize``, ``fused``); the tuner is shared by all groups.
        lr: factor on the tuned learning rate (the authors' ``lr_factor``).
        beta: smoothing factor of every tuner EMA, in [0, 1).
        curv_win_width: length of the sliding window of curvature estimates.
        zero_debias: divide the EMAs by ``1 - beta**(t+1)``.
        weight_decay: coupled L2 penalty added to the gradient.
        initial_lr: the tuned learning rate before tuning starts (the first step's; with
            ``smooth=True`` the smoothing starts here).
        initial_momentum: the momentum before tuning starts.
        smooth: apply the EMA-smoothed ``mu`` and ``alpha`` (the paper's Algorithm 1);
            ``False`` (the authors' PyTorch code) applies the values solved at this step.
        slow_start: scale the tuned rate by ``min(1, (t+1) / (10 curv_win_width))``.
        adapt_clip: the authors' adaptive clipping (statistics protection, exploding
            gradients, catastrophic moves; see the module docstring).
        stat_protect_fac: ``F``: the statistics see at most ``sqrt(F h_max)`` of gradient norm.
        catastrophic_move_thresh: ``M``: the largest ``lr * ||g||`` a step applies.
        sparsity_debias: correct the statistics for the fraction of nonzero gradient entries.
        restart_at_zero_momentum: a step with momentum 0 keeps no momentum buffer (torch's
            SGD); ``False`` keeps ``buf = g``, which the next step's momentum then carries.
        eps: the tuner's guard against division by zero (the authors' 1e-6).
        maximize: maximize the objective instead of minimizing.
        fused: use torch's fused SGD kernel for the update (default: where the tensors allow).

    :meth:`get_last_lr` and :meth:`get_last_momentum` report the values applied at the last
    step (before any step: those the first step will apply); :attr:`tuner` the statistics.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        beta: float = 0.999,
        curv_win_width: int = 20,
        zero_debias: bool = True,
        weight_decay: float = 0.0,
        *,
        initial_lr: float = 1.0,
        initial_momentum: float = 0.0,
        smooth: bool = True,
        slow_start: bool = True,
        adapt_clip: bool = True,
        stat_protect_fac: float = 100.0,
        catastrophic_move_thresh: float = 100.0,
        sparsity_debias: bool = False,
        restart_at_zero_momentum: bool = True,
        eps: float = 1e-6,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "maximize": maximize, "fused": fused}
        super().__init__(params, defaults)
        _checks.unit_interval("beta", beta)
        curv_win_width = _checks.integer("curv_win_width", curv_win_width, 1)
        for name, value in (
            ("zero_debias", zero_debias),
            ("smooth", smooth),
            ("slow_start", slow_start),
            ("adapt_clip", adapt_clip),
            ("sparsity_debias", sparsity_debias),
            ("restart_at_zero_momentum", restart_at_zero_momentum),
        ):
            _checks.flag(name, value)
        _checks.learning_rate("initial_lr", initial_lr)
        _checks.unit_interval("initial_momentum", initial_momentum)
        for name, value in (
            ("stat_protect_fac", stat_protect_fac),
            ("catastrophic_move_thresh", catastrophic_move_thresh),
            ("eps", eps),
        ):
            _checks.positive(name, value)
        self.state[self.param_groups[0]["params"][0]][TUNER_KEY] = {
            "beta": float(beta),
            "curv_win_width": curv_win_width,
            "zero_debias": zero_debias,
            "smooth": smooth,
            "slow_start": slow_start,
            "adapt_clip": adapt_clip,
            "stat_protect_fac": float(stat_protect_fac),
            "catastrophic_move_thresh": float(catastrophic_move_thresh),
            "sparsity_debias": sparsity_debias,
            "restart_at_zero_momentum": restart_at_zero_momentum,
            "eps": float(eps),
            "step": 0,
            "lr": float(initial_lr),
            "momentum": float(initial_momentum),
            "curv_win": [],
            "h_min_avg": 0.0,
            "h_max_avg": 0.0,
            "grad_norm_squared_avg": 0.0,
            "grad_norm_avg": 0.0,
            "dist_to_opt_avg": 0.0,
            "sparsity_avg": 0.0,
            "h_min": 0.0,
            "h_max": 0.0,
            "grad_var": 0.0,
            "dist_to_opt": 0.0,
            "sparsity": 1.0,
            "grad_norm_squared": 0.0,  # this step's ||g||^2 (after the statistics' clip)
        }

    def _validate_group(self, group: dict[str, Any]) -> None:
        _checks.learning_rate("lr", group["lr"])
        _checks.nonnegative("weight_decay", group["weight_decay"])
        _checks.flag("maximize", group["maximize"])
        use_fused_sgd(group["fused"], group["params"], complex_ok=True)

    def _check_state(self, param: Tensor, state: Mapping[Any, Any], where: str) -> None:
        """Also require the tuner in the first parameter's state: torch's SGD and Adam (and
        DemonSGD) groups hold every YellowFin hyperparameter, so only the state tells a
        foreign state dict apart. Every YellowFin has the tuner from construction on; one
        saved before the clipping options lacks only what ``tuner`` fills in."""
        super()._check_state(param, state, where)
        if param is not self.param_groups[0]["params"][0]:
            return
        name = type(self).__name__
        if TUNER_KEY not in state:
            raise ConfigError(
                f"{where}: missing {TUNER_KEY!r}; allowed: a {name} state dict, whose first "
                "parameter's state holds the tuner (is it another optimizer's?)"
            )
        tuner = state[TUNER_KEY]
        if not isinstance(tuner, Mapping):
            raise invalid(f"{where}.{TUNER_KEY}", tuner, f"a dict, as {name}'s tuner state")
        missing = sorted(set(self.tuner) - set(_LEGACY_TUNER) - set(tuner))
        if missing:
            raise ConfigError(
                f"{where}.{TUNER_KEY}: missing {', '.join(map(repr, missing))}; allowed: a "
                f"{name} tuner state, which holds them"
            )

    @property
    def tuner(self) -> dict[str, Any]:
        """The tuner's state: settings, statistics and the current ``lr`` (alpha), ``momentum``."""
        tuner = self.state[self.param_groups[0]["params"][0]][TUNER_KEY]
        for key, value in _LEGACY_TUNER.items():
            tuner.setdefault(key, value)
        return tuner

    def _applied_lr(self, factor: float) -> float:
        """``factor * alpha``, capped so that ``lr * ||g||`` stays below the catastrophic move."""
        tuner = self.tuner
        lr = float(factor) * tuner["lr"]
        if tuner["adapt_clip"]:
            norm_sq, limit = tuner["grad_norm_squared"], tuner["catastrophic_move_thresh"]
            if lr * math.sqrt(norm_sq) >= limit:
                lr = limit / math.sqrt(norm_sq + tuner["eps"])
        return lr

    def get_last_lr(self) -> list[float]:
        """The learning rate applied at the last step, ``group lr * alpha``, per group."""
        return [self._applied_lr(g["lr"]) for g in self.param_groups]

    def get_last_momentum(self) -> list[float]:
        """The momentum applied at the last step (the same for every group)."""
        return [self.tuner["momentum"]] * len(self.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Measure, tune, then take one momentum-SGD step with the tuned lr and momentum."""
        loss = evaluate_closure(closure)
        gathered = self._gather_groups()  # refuses a sparse gradient before any change
        if not gathered:
            return loss
        tuner = self.tuner
        work = []
        for group, batch in gathered:  # complex parameters as their real views
            grads = effective_grads(
                batch.params, batch.grads, group["weight_decay"], group["maximize"]
            )
            work.append((group, batch, grads))
        all_grads = [g for _, _, grads in work for g in grads]
        averages = []
        for _, batch, _ in work:
            for key, p in zip(batch.keys, batch.params, strict=True):
                state = self.state[key]
                avg = state.get("grad_avg")
                if avg is None:
                    avg = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["grad_avg"] = param_layout(avg, key) if batch.complex else avg
                elif batch.complex:
                    avg = real_view(avg)
                averages.append(avg)
        k, eps, h_max = tuner["step"], tuner["eps"], tuner["h_max"]  # h_max: last step's
        clip = tuner["adapt_clip"]
        scale = 1.0  # 1. statistics protection
        if clip and k > 1:
            limit = math.sqrt(tuner["stat_protect_fac"] * h_max) + eps
            scale = clip_factor(math.sqrt(_norm_squared(all_grads)), limit)
        grad_sq, avg_sq, nonzero = _measure(
            all_grads, averages, 1.0 - tuner["beta"], scale, tuner["sparsity_debias"]
        )
        _tune(tuner, grad_sq, avg_sq, nonzero)
        if clip and k > 0 and grad_sq >= h_max:  # 2. exploding gradient
            scale *= clip_factor(math.sqrt(grad_sq), math.sqrt(h_max) + eps)
        mu = tuner["momentum"]
        keep = mu != 0 or not tuner["restart_at_zero_momentum"]
        for group, batch, grads in work:
            if scale != 1.0:
                grads = torch._foreach_mul(grads, scale)
            states = [self.state[key] for key in batch.keys]
            buffers = [s.get("momentum_buffer") if keep else None for s in states]
            if batch.complex:
                buffers = [None if b is None else real_view(b) for b in buffers]
            _momentum_sgd(
                batch.params,
                grads,
                buffers,
                lr=self._applied_lr(group["lr"]),  # 3. catastrophic move
                momentum=mu,
                fused=use_fused_sgd(group["fused"], batch.params),
            )
            if not keep:
                for state in states:
                    state.pop("momentum_buffer", None)
                continue
            if batch.complex:
                buffers = [param_layout(b, key) for b, key in zip(buffers, batch.keys, strict=True)]
            for state, buf in zip(states, buffers, strict=True):
                state["momentum_buffer"] = buf
        return loss


def _norm_squared(grads: list[Tensor]) -> float:
    """``||g||^2`` over all the tensors, in float64; one sync per device."""
    partial = [
        torch.stack(torch._foreach_norm(run)).double().square().sum()
        for (run,) in group_by_device_dtype(grads)
    ]
    return float(sum(x.item() for x in partial))


def _nonzero_fraction_parts(gs: list[Tensor]) -> tuple[Tensor, int]:
    """(nonzero entries, entries) of a batch (a complex gradient arrives as its real view)."""
    nonzero = torch.stack([torch.count_nonzero(g) for g in gs]).sum().double()
    return nonzero, sum(g.numel() for g in gs)


def _measure(
    grads: list[Tensor], averages: list[Tensor], weight: float, scale: float, sparsity: bool
) -> tuple[float, float, float]:
    """``(||g||^2, ||EMA(g)||^2, nnz(g) / numel(g))`` after ``EMA(g) <- lerp(EMA(g), g,
    weight)``, for ``g`` the gradients times ``scale``, as floats (the fraction 1.0 unless
    ``sparsity``).

    Batch by batch, so that the three passes over a batch read it from cache; one sync per
    device at the end.
    """
    partial: dict[torch.device, list[Tensor]] = {}
    numel = 0
    for run_g, run_avg in group_by_device_dtype(grads, averages):
        for batch in cache_batches(run_g):
            gs = [run_g[j] for j in batch]
            if scale != 1.0:
                gs = torch._foreach_mul(gs, scale)
            avgs = [run_avg[j] for j in batch]
            grad_sq = torch.stack(torch._foreach_norm(gs)).double().square().sum()
            torch._foreach_lerp_(avgs, gs, weight)
            avg_sq = torch.stack(torch._foreach_norm(avgs)).double().square().sum()
            sums = [grad_sq, avg_sq]
            if sparsity:
                nonzero, count = _nonzero_fraction_parts(gs)
                sums.append(nonzero)
                numel += count
            partial.setdefault(gs[0].device, []).append(torch.stack(sums))
    total = [0.0, 0.0, 0.0]
    for sums in partial.values():
        values = torch.stack(sums).sum(0).tolist()
        total = [t + v for t, v in zip(total, values, strict=False)]
    return total[0], total[1], total[2] / numel if sparsity else 1.0


def _tune(tuner: dict[str, Any], grad_sq: float, avg_sq: float, nonzero: float) -> None:
    """Advance the tuner by one step: ``grad_sq = ||g||^2``, ``avg_sq = ||EMA(g)||^2``,
    ``nonzero`` the fraction of nonzero gradient entries."""
    beta, eps, k = tuner["beta"], tuner["eps"], tuner["step"]
    tuner["grad_norm_squared"] = grad_sq
    tuner["grad_norm_squared_avg"] = beta * tuner["grad_norm_squared_avg"] + (1 - beta) * grad_sq
    sparsity = 1.0
    if tuner["sparsity_debias"]:  # debiased whether or not zero_debias is (authors' code)
        tuner["sparsity_avg"] = beta * tuner["sparsity_avg"] + (1 - beta) * nonzero
        sparsity = tuner["sparsity_avg"] / (1.0 - beta ** (k + 1))
        tuner["sparsity"] = sparsity
    # curvature range over the window of log(h + eps)
    window, width = tuner["curv_win"], tuner["curv_win_width"]
    log_h = math.log(grad_sq + eps)
    if len(window) < width:
        window.append(log_h)
    else:
        window[k % width] = log_h
    tuner["h_min_avg"] = beta * tuner["h_min_avg"] + (1 - beta) * min(window)
    tuner["h_max_avg"] = beta * tuner["h_max_avg"] + (1 - beta) * max(window)
    debias = 1.0 - beta ** (k + 1) if tuner["zero_debias"] else 1.0
    tuner["h_min"] = math.exp(tuner["h_min_avg"] / debias)
    tuner["h_max"] = math.exp(tuner["h_max_avg"] / debias)
    # gradient variance
    variance = tuner["grad_norm_squared_avg"] / debias - avg_sq / debias**2
    tuner["grad_var"] = max(variance, eps)
    # distance to the optimum
    tuner["grad_norm_avg"] = beta * tuner["grad_norm_avg"] + (1 - beta) * math.sqrt(grad_sq)
    ratio = tuner["grad_norm_avg"] / (tuner["grad_norm_squared_avg"] + eps)
    tuner["dist_to_opt_avg"] = beta * tuner["dist_to_opt_avg"] + (1 - beta) * ratio
    tuner["dist_to_opt"] = tuner["dist_to_opt_avg"] / debias
    if tuner["sparsity_debias"]:
        tuner["h_min"] *= sparsity
        tuner["h_max"] *= sparsity
        tuner["grad_var"] *= sparsity
        tuner["dist_to_opt"] /= math.sqrt(sparsity) + eps
    if k > 0:
        mu, lr = single_step(
            tuner["h_min"], tuner["h_max"], tuner["grad_var"], tuner["dist_to_opt"], eps
        )
        if tuner["slow_start"]:
            lr = min(lr, lr * (k + 1) / (10.0 * width))
        if tuner["smooth"]:
            mu = beta * tuner["momentum"] + (1 - beta) * mu
            lr = beta * tuner["lr"] + (1 - beta) * lr
        tuner["momentum"], tuner["lr"] = mu, lr
    tuner["step"] = k + 1


def _momentum_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    fused: bool,
) -> None:
    """``buf = momentum buf + g`` (``buf = g`` on a first step); ``theta -= lr buf``.

    Unlike torch's SGD, a momentum of 0 still refreshes the buffer (``buf = g``): the caller
    drops it where torch's rule is wanted.
    """
    if not fused:
        for i, (param, g) in enumerate(zip(params, grads, strict=True)):
            buf = momentum_buffers[i]
            if buf is None:
                buf = torch.clone(g).detach()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(g)
            param.add_(buf, alpha=-lr)
        return
    fresh = {i for i, b in enumerate(momentum_buffers) if b is None}
    for i in fresh:
        momentum_buffers[i] = torch.empty_like(grads[i], memory_format=torch.preserve_format)
    for first_step in (True, False):
        # momentum 0 is buf = g: the kernel's first-step branch (its momentum must be nonzero)
        idx = [i for i in range(len(params)) if first_step == (i in fresh or momentum == 0)]
        if not idx:
            continue
        for p_run, g_run, b_run in group_by_device_dtype(
            [params[i] for i in idx], [grads[i] for i in idx], [momentum_buffers[i] for i in idx]
        ):
            torch._fused_sgd_(
                p_run,
                g_run,
                b_run,
                weight_decay=0.0,
                momentum=momentum if momentum != 0 else 1.0,
                lr=lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=first_step,
            )
