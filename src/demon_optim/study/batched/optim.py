r"""One optimizer step for M models at once, over stacked parameters.

A stacked parameter holds the same tensor of M models along its leading dimension
(``[M, ...]``). Each model has its own hyperparameters, given per step as ``[M]`` tensors
(:class:`BatchedHyperparameters`) and broadcast over a parameter as ``[M, 1, ..., 1]``.
:class:`BatchedOptimizer` applies to every model ``m`` exactly the update its unbatched
optimizer would (``g`` the gradient, ``\theta`` the parameter, ``\eta_m`` the learning rate,
``\lambda_m`` the weight decay, ``\beta_m`` the momentum of this step, ``n`` the parameter's
update count, counted from 1):

``sgd`` (``torch.optim.SGD``, dampening 0, no Nesterov) and ``demon-sgd``
(:class:`demon_optim.DemonSGD`, whose :math:`\beta_m` is Demon's :math:`\beta_k`):

.. math::

    g' = g + \lambda_m \theta, \qquad b \leftarrow \beta_m b + g' \;(b_0 = 0,\ \text{so the
    first step gives } b = g'), \qquad \theta \leftarrow \theta - \eta_m b

    \text{except for } \texttt{sgd} \text{ when } \beta_m = 0 \text{ (torch's shortcut): }
    b \text{ is left as it is and } \theta \leftarrow \theta - \eta_m g'

``adam`` (``torch.optim.Adam``, coupled weight decay; torch corrects the first moment's
bias with the *current* :math:`\beta_m`, which is what a scheduled beta1 on torch's Adam
gets, and so is what this gives):

.. math::

    m \leftarrow m + (1 - \beta_m)(g' - m), \qquad
    v \leftarrow \beta_2 v + (1 - \beta_2) g'^2, \qquad
    \theta \leftarrow \theta - \frac{\eta_m}{1 - \beta_m^n}
        \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^n} + \epsilon}

``demon-adam`` (:class:`demon_optim.DemonAdam`, the paper's undamped first moment):

.. math::

    m \leftarrow \beta_m m + g', \qquad v \text{ as Adam's}, \qquad
    \theta \leftarrow \theta - \eta_m \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^n} + \epsilon}

How it stays exact: each step's per-model scalars (``-lr``, ``1 - beta1``, the bias
corrections) are computed in Python floats from the hyperparameters' host values, as torch
computes them for one model, then rounded once to the parameters' dtype, as torch rounds a
Python scalar; the tensor operations are those of torch's for-loop implementations, in
their order (an operation with a scalar becomes the same operation with an ``[M, 1, ...]``
tensor, which rounds alike). Measured on the CPU (torch 2.13), ``sgd`` and ``adam`` give
torch's parameters bit for bit in float32 and float64, ``demon-sgd`` DemonSGD's in float64;
``demon-adam`` computes its first moment directly where DemonAdam keeps a scaled one for
torch's fused kernel, and DemonSGD's float32 kernel rounds differently, so those agree to
rounding (the tests ask 1e-10 relative in float64, 1e-5 in float32).

Models that do not step: ``step(hp, active)`` takes a boolean ``[M]`` mask. While every model
is active (and no ``sgd`` model has momentum 0) the update runs in place, as torch's own
loop. Otherwise every new value is computed aside and committed with ``torch.where``, so an
inactive model's parameters and state keep their exact bits, and the NaN or inf a diverged
model may hold never reaches another model (a product with a zero coefficient would turn
them into NaN; a selection does not).

Cost: each operation is one call over a whole stacked tensor (or, for the Adam kinds on the
CPU, over cache-sized pieces of whole models: :data:`CHUNK_NUMEL`), so M models take about
the calls of one model's update and the memory traffic of M; ``benchmarks/batched_optim.py``
measures it against M unbatched steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from demon_optim.errors import ConfigError, invalid
from demon_optim.optim._base import host_to_device

__all__ = ["DTYPES", "KINDS", "BatchedHyperparameters", "BatchedOptimizer"]

KINDS = ("sgd", "adam", "demon-sgd", "demon-adam")
"""The update rules: torch's SGD and Adam, DemonSGD and DemonAdam (the built-in methods')."""

DTYPES = (torch.float32, torch.float64)

_ADAM_KINDS = ("adam", "demon-adam")
_CHUNKED_KINDS = _ADAM_KINDS  # see CHUNK_NUMEL
_FIELDS = ("lr", "momentum", "weight_decay", "beta2", "eps")


@dataclass(frozen=True, eq=False)
class BatchedHyperparameters:
    """The hyperparameters of one step for each of M models, as ``[M]`` tensors.

    ``momentum`` is the momentum this step applies: SGD's momentum, Adam's beta1 (as a
    schedule has set it), Demon's :math:`\\beta_k`. ``beta2`` and ``eps`` are the Adam kinds'
    (None for the SGD kinds). ``host`` holds the same values as Python floats, which the
    optimizer computes its per-model scalars from (exactly as an unbatched optimizer does,
    and without reading a device tensor back at every step); :meth:`from_values` fills it.
    Left out, it is read from the tensors once (on a GPU, a wait for the device).
    """

    lr: Tensor
    momentum: Tensor
    weight_decay: Tensor
    beta2: Tensor | None = None
    eps: Tensor | None = None
    host: Mapping[str, tuple[float, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        size = None
        values = dict(self.host)
        for name in _FIELDS:
            tensor = getattr(self, name)
            if tensor is None:
                continue
            if not isinstance(tensor, Tensor) or tensor.dim() != 1:
                raise invalid(f"BatchedHyperparameters.{name}", tensor, "a 1-d tensor [M]")
            if size is None:
                size = tensor.numel()
            if tensor.numel() != size:
                raise invalid(
                    f"BatchedHyperparameters.{name}",
                    f"a tensor of {tensor.numel()} values",
                    f"{size} values, one per model, as lr has",
                )
            if name not in values:
                values[name] = tuple(tensor.to(torch.float64).tolist())
            elif len(values[name]) != size:
                raise invalid(f"BatchedHyperparameters.host[{name!r}]", values[name], "M values")
        if (self.beta2 is None) != (self.eps is None):
            raise invalid("BatchedHyperparameters", "beta2 without eps", "both or neither")
        object.__setattr__(self, "host", values)

    @property
    def size(self) -> int:
        """M, the number of models."""
        return self.lr.numel()

    @classmethod
    def from_values(
        cls,
        *,
        lr: Sequence[float],
        momentum: Sequence[float],
        weight_decay: Sequence[float],
        beta2: Sequence[float] | None = None,
        eps: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> BatchedHyperparameters:
        """Build from per-model Python floats: one host-to-device copy for all fields, the
        floats kept in ``host``."""
        given = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        if (beta2 is None) != (eps is None):
            raise invalid("beta2, eps", (beta2, eps), "both (the Adam kinds) or neither")
        if beta2 is not None and eps is not None:
            given.update(beta2=beta2, eps=eps)
        host = {name: tuple(map(float, values)) for name, values in given.items()}
        size = len(host["lr"])
        for name, values in host.items():
            if len(values) != size:
                raise invalid(name, f"{len(values)} values", f"{size}, one per model, as lr")
        flat = [x for values in host.values() for x in values]
        table = host_to_device(flat, torch.device(device)).view(len(host), size).to(dtype)
        return cls(**dict(zip(host, table.unbind(0), strict=True)), host=host)


class _Coefficients:
    """One step's per-model scalars as ``[M, 1, ..., 1]`` tensors of the parameters' dtype.

    All of them travel in one tensor (one host-to-device copy per step); a row's view for
    each parameter rank and piece of the models is made once.
    """

    def __init__(self, rows: Mapping[str, Sequence[float]], size: int, like: Tensor) -> None:
        flat = [float(x) for values in rows.values() for x in values]
        table = host_to_device(flat, like.device).view(len(rows), size).to(like.dtype)
        self._rows = dict(zip(rows, table.unbind(0), strict=True))
        self._size = size
        self._pieces: dict[tuple[int, int, int | None], _Piece] = {}

    def piece(self, ndim: int, rows_of: slice) -> _Piece:
        """The coefficients of the models ``rows_of``, shaped for a parameter of ``ndim``."""
        key = (ndim, rows_of.start, rows_of.stop)
        piece = self._pieces.get(key)
        if piece is None:
            shape = (self._size, *(1,) * (ndim - 1))
            piece = _Piece({name: row.view(shape)[rows_of] for name, row in self._rows.items()})
            self._pieces[key] = piece
        return piece


class _Piece:
    """Coefficient views for one parameter rank and range of models."""

    def __init__(self, views: dict[str, Tensor]) -> None:
        self._views = views
        self._masks: dict[str, Tensor] = {}

    def __call__(self, name: str) -> Tensor:
        return self._views[name]

    def mask(self, name: str) -> Tensor:
        """A 0/1 row as a boolean mask."""
        mask = self._masks.get(name)
        if mask is None:
            mask = self._views[name] != 0
            self._masks[name] = mask
        return mask


CHUNK_NUMEL = 1 << 17
"""On the CPU, the Adam kinds' update goes through a stacked tensor in pieces of about this
many values (whole models each; 512 KiB of float32), all of its eight passes over one piece
before the next: the piece's tensors (parameter, gradient, moments, temporaries) then stay
in the core's cache between passes, as one small model's do in an unbatched step (twice as
fast at M = 128 MNIST-1D MLPs). The SGD kinds' three passes gain less than the pieces'
calls cost, and on a GPU every piece is more kernel launches: there a stacked tensor is
one piece. Measured in ``benchmarks/batched_optim.py``."""


def _pieces(param: Tensor, limit: int | None) -> list[slice]:
    """Ranges of models along the leading dimension, each about ``limit`` values."""
    size = param.size(0)
    per_model = max(1, param[0].numel()) if size else 1
    if limit is None or per_model * size <= limit:
        return [slice(0, size)]
    step = max(1, limit // per_model)
    return [slice(a, min(a + step, size)) for a in range(0, size, step)]


class BatchedOptimizer:
    """One update over stacked parameters for M models: each model's own torch.optim.SGD,
    torch.optim.Adam, DemonSGD or DemonAdam step (``kind``; equations in the module's
    docstring), with per-model hyperparameters.

    Args:
        params: the stacked parameters (tensors ``[M, ...]``, one dtype, float32 or float64,
            one device), whose ``.grad`` the backward pass fills. A parameter without a
            gradient is skipped, as torch skips it (its state and update count unchanged).
        kind: one of :data:`KINDS`.

    Per step each operation is one call over a whole stacked tensor (a handful per
    parameter, as many as torch's loop has for one model), so M models cost about what one
    model's update costs in calls, and memory is read about as often as M unbatched steps
    read it. The state (momentum buffers, moments, update counts) is per model and starts
    at zero; :meth:`member_state` shows model ``m``'s as its unbatched optimizer keeps it.
    """

    def __init__(self, params: Sequence[Tensor], kind: str) -> None:
        if kind not in KINDS:
            raise invalid("kind", kind, KINDS)
        params = list(params)
        if not params:
            raise invalid("params", params, "a non-empty list of stacked tensors [M, ...]")
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or p.dim() < 1 or p.layout is not torch.strided:
                raise invalid(f"params[{i}]", type(p).__name__, "a dense tensor [M, ...]")
        first = params[0]
        for i, p in enumerate(params):
            if p.size(0) != first.size(0) or p.dtype != first.dtype or p.device != first.device:
                raise invalid(
                    f"params[{i}]",
                    f"a {p.dtype} tensor of {p.size(0)} models on {p.device}",
                    f"{first.size(0)} models, {first.dtype}, on {first.device}, as params[0]",
                )
        if first.dtype not in DTYPES:
            raise invalid("params dtype", first.dtype, DTYPES)
        self.params = params
        self.kind = kind
        self.size = first.size(0)
        limit = CHUNK_NUMEL if first.device.type == "cpu" and kind in _CHUNKED_KINDS else None
        self._pieces = [_pieces(p, limit) for p in params]
        zeros = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        if kind in _ADAM_KINDS:
            self.exp_avgs = zeros
            self.exp_avg_sqs = [torch.zeros_like(z) for z in zeros]
            # update counts n per parameter and model; parameters with one history share
            # one tuple, so that a step computes each set of bias corrections once
            start = (0,) * self.size
            self.steps: list[tuple[int, ...]] = [start] * len(params)
        else:
            self.momentum_buffers = zeros

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, hp: BatchedHyperparameters, active: Tensor) -> None:
        """Update every active model's parameters with its hyperparameters.

        ``active``: a bool tensor ``[M]`` (best on the CPU: it is read on the host); an
        inactive model's parameters and state do not change, and no NaN in it reaches
        another model.
        """
        flags = self._flags(active)
        if hp.size != self.size:
            raise invalid("hp", f"hyperparameters for {hp.size} models", f"{self.size}")
        if self.kind in _ADAM_KINDS and (hp.beta2 is None or hp.eps is None):
            raise ConfigError(f"hp: kind {self.kind!r} needs beta2 and eps")
        if not any(flags):
            return
        work = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if g.layout is not torch.strided or g.shape != p.shape or g.dtype != p.dtype:
                raise invalid(
                    f"params[{i}].grad", f"{g.layout} {g.dtype} {tuple(g.shape)}", "dense, as p"
                )
            work.append(i)
        if not work:
            return
        if self.kind in _ADAM_KINDS:
            self._adam(hp, flags, work)
        else:
            self._sgd(hp, flags, work)

    def _flags(self, active: Tensor) -> list[bool]:
        if (
            not isinstance(active, Tensor)
            or active.dtype != torch.bool
            or tuple(active.shape) != (self.size,)
        ):
            shown = tuple(active.shape) if isinstance(active, Tensor) else active
            raise invalid("active", shown, f"a bool tensor of shape [{self.size}]")
        return active.tolist()

    def _sgd(self, hp: BatchedHyperparameters, flags: list[bool], work: list[int]) -> None:
        host = hp.host
        momentum, decay = host["momentum"], host["weight_decay"]
        # torch's SGD with momentum 0 neither reads nor writes its buffer; Demon's always does
        update = [
            a and (self.kind == "demon-sgd" or b != 0) for a, b in zip(flags, momentum, strict=True)
        ]
        rows: dict[str, Sequence[float]] = {
            "neg_lr": [-x for x in host["lr"]],
            "momentum": momentum,
        }
        decayed = any(w != 0 for w in decay)
        if decayed:
            rows["weight_decay"] = decay
        in_place = all(update)  # every model active and every buffer moving
        skipped = not in_place and any(a and not u for a, u in zip(flags, update, strict=True))
        if not in_place:
            rows["active"] = [float(a) for a in flags]
            rows["update"] = [float(u) for u in update]
        coefficients = _Coefficients(rows, self.size, self.params[0])
        for i in work:
            grad = self.params[i].grad
            assert grad is not None
            for rows_of in self._pieces[i]:
                p, g = self.params[i][rows_of], grad[rows_of]
                buf = self.momentum_buffers[i][rows_of]
                c = coefficients.piece(p.dim(), rows_of)
                if decayed:  # g + wd * p, rounded as torch's grad.add(p, alpha=wd)
                    g = torch.addcmul(g, p, c("weight_decay"))
                if in_place:
                    buf.mul_(c("momentum")).add_(g)
                    p.addcmul_(buf, c("neg_lr"))  # p - lr * buf, as p.add_(buf, alpha=-lr)
                    continue
                moved = torch.mul(buf, c("momentum")).add_(g)
                direction = torch.where(c.mask("update"), moved, g) if skipped else moved
                torch.where(c.mask("update"), moved, buf, out=buf)
                stepped = torch.addcmul(p, direction, c("neg_lr"))
                torch.where(c.mask("active"), stepped, p, out=p)

    def _adam(self, hp: BatchedHyperparameters, flags: list[bool], work: list[int]) -> None:
        host = hp.host
        lr, beta1, decay = host["lr"], host["momentum"], host["weight_decay"]
        beta2s, epss = host["beta2"], host["eps"]
        demon = self.kind == "demon-adam"
        decayed = any(w != 0 for w in decay)
        in_place = all(flags)
        # beta2 and eps are one value for every model in the built-in methods: then they are
        # Python scalars in the kernels, as in torch's loop (per-model rows otherwise)
        beta2 = beta2s[0] if len(set(beta2s)) == 1 else None
        eps = epss[0] if len(set(epss)) == 1 else None
        # each distinct history of update counts (usually one for all parameters) gets its
        # bias corrections, computed in Python floats as torch computes them
        histories: dict[int, tuple[tuple[int, ...], _Coefficients]] = {}
        for i in work:
            old = self.steps[i]
            if id(old) in histories:
                continue
            counts = tuple(n + a for n, a in zip(old, flags, strict=True))
            n = [max(k, 1) for k in counts]  # an inactive model never updated: any value
            rows: dict[str, Sequence[float]] = {
                "bc2_sqrt": [(1 - b2**k) ** 0.5 for b2, k in zip(beta2s, n, strict=True)],
            }
            if demon:
                rows["beta1"] = beta1
                rows["neg_step"] = [-x for x in lr]
            else:
                rows["weight"] = [1 - b for b in beta1]
                rows["neg_step"] = [-(x / (1 - b**k)) for x, b, k in zip(lr, beta1, n, strict=True)]
            if decayed:
                rows["weight_decay"] = decay
            if beta2 is None:
                rows["beta2"] = beta2s
                rows["one_minus_beta2"] = [1 - b for b in beta2s]
            if eps is None:
                rows["eps"] = epss
            if not in_place:
                rows["active"] = [float(a) for a in flags]
            histories[id(old)] = (counts, _Coefficients(rows, self.size, self.params[0]))
        for i in work:
            counts, coefficients = histories[id(self.steps[i])]
            grad = self.params[i].grad
            assert grad is not None
            for rows_of in self._pieces[i]:
                p, g = self.params[i][rows_of], grad[rows_of]
                m_old, v_old = self.exp_avgs[i][rows_of], self.exp_avg_sqs[i][rows_of]
                c = coefficients.piece(p.dim(), rows_of)
                if decayed:
                    g = torch.addcmul(g, p, c("weight_decay"))
                if in_place:
                    m, v = m_old, v_old
                    if demon:
                        m.mul_(c("beta1")).add_(g)
                    else:
                        m.lerp_(g, c("weight"))
                    v.mul_(beta2 if beta2 is not None else c("beta2"))
                else:  # new values aside, committed below for the active models only
                    if demon:
                        m = torch.mul(m_old, c("beta1")).add_(g)
                    else:
                        m = torch.lerp(m_old, g, c("weight"))
                    v = torch.mul(v_old, beta2 if beta2 is not None else c("beta2"))
                if beta2 is not None:
                    v.addcmul_(g, g, value=1 - beta2)
                else:  # (c * g) * g + v, the order of torch's addcmul(g, g, value=c)
                    v.addcmul_(g * c("one_minus_beta2"), g)
                denom = v.sqrt().div_(c("bc2_sqrt")).add_(eps if eps is not None else c("eps"))
                # p + (-step * m) / denom, the order of torch's addcdiv(m, denom, value=-step)
                if in_place:
                    p.addcdiv_(m * c("neg_step"), denom)
                    continue
                stepped = torch.addcdiv(p, m * c("neg_step"), denom)
                active = c.mask("active")
                torch.where(active, m, m_old, out=m_old)
                torch.where(active, v, v_old, out=v_old)
                torch.where(active, stepped, p, out=p)
            self.steps[i] = counts

    # -- the rest ------------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the stacked parameters' gradients (to None by default, as torch)."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    def select(self, keep: Sequence[int], params: Sequence[Tensor]) -> BatchedOptimizer:
        """The models ``keep`` (indices here, in their new order) as a new optimizer over
        ``params``, their parameters stacked anew (``params[i][k]`` holds
        ``self.params[i][keep[k]]``), each with its state (buffers, moments, update counts)
        copied, so that it steps on exactly as it would have here. The batched trial loop
        drops the models that stopped this way, so that they cost nothing more."""
        new = BatchedOptimizer(params, self.kind)
        if new.size != len(keep) or len(new.params) != len(self.params):
            raise invalid("params", f"{len(new.params)} of {new.size} models", f"{len(keep)}")
        index = torch.tensor(list(keep), dtype=torch.long, device=self.params[0].device)
        if self.kind in _ADAM_KINDS:
            for mine, theirs in (
                (self.exp_avgs, new.exp_avgs),
                (self.exp_avg_sqs, new.exp_avg_sqs),
            ):
                for old, fresh in zip(mine, theirs, strict=True):
                    fresh.copy_(old.index_select(0, index))
            kept: dict[int, tuple[int, ...]] = {}  # one history stays one (shared) tuple
            for i, counts in enumerate(self.steps):
                if id(counts) not in kept:
                    kept[id(counts)] = tuple(counts[m] for m in keep)
                new.steps[i] = kept[id(counts)]
        else:
            for old, fresh in zip(self.momentum_buffers, new.momentum_buffers, strict=True):
                fresh.copy_(old.index_select(0, index))
        return new

    def member_state(self, m: int) -> list[dict[str, Any]]:
        """Model ``m``'s state per parameter, named as its unbatched optimizer names it
        (views of the stacked state): ``momentum_buffer`` (SGD kinds; zero until the first
        step that moves it, where torch has None), or ``step``, ``exp_avg`` (Demon Adam: the
        undamped first moment itself, which DemonAdam keeps scaled) and ``exp_avg_sq``."""
        if not 0 <= m < self.size:
            raise invalid("m", m, f"a model index in [0, {self.size})")
        if self.kind in _ADAM_KINDS:
            return [
                {"step": self.steps[i][m], "exp_avg": e[m], "exp_avg_sq": s[m]}
                for i, (e, s) in enumerate(zip(self.exp_avgs, self.exp_avg_sqs, strict=True))
            ]
        return [{"momentum_buffer": b[m]} for b in self.momentum_buffers]
