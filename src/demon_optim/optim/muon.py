r"""Muon for a whole model: torch's ``torch.optim.Muon`` on the hidden weights, AdamW on the rest.

Muon (K. Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks")
orthogonalises the momentum of each weight matrix with a Newton-Schulz iteration. torch
2.13's implementation (``torch.optim.Muon``), per matrix ``W`` of shape ``(A, B)``::

    b = mu * b + (1 - mu) * g                      (b starts at 0; torch keeps an EMA)
    u = (1 - mu) * g + mu * b   if nesterov else b
    O = NS_5(u)                                    (~ U V^T of u = U S V^T, in bfloat16)
    W = W * (1 - lr * weight_decay) - lr * sqrt(max(1, A / B)) * O

Its authors prescribe (the docstring of their reference ``muon.py``): "Muon should only be
used for hidden weight layers. The input embedding, final output layer, and any internal
gains or biases should be optimized using a standard method such as AdamW. Hidden
convolutional weights can be trained using Muon by viewing them as 2D and then collapsing
their last 3 dimensions." torch's class takes 2-D parameters only, so:

* :class:`Muon` is ``torch.optim.Muon`` (its update, its Newton-Schulz kernel, its state)
  that also takes a weight of more dimensions (a conv kernel ``(out, in, k...)``) as the
  matrix ``(out, in * k...)``: the parameter, its gradient and its buffer are *viewed* as
  that matrix, so the update is written in place without copies. On 2-D parameters it is
  ``torch.optim.Muon`` bit for bit (tested).
* :func:`split_hidden` picks the hidden weights out of ``model.parameters()``;
* :func:`muon_with_adamw` builds the pair as one :class:`CompositeOptimizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import torch

from ..errors import ConfigError
from .composite import CompositeOptimizer

__all__ = ["Muon", "muon_with_adamw", "split_hidden"]


def _matrix(tensor: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor | None:
    """``tensor`` (a parameter's shape) as an ``(out, -1)`` matrix view; None if no view."""
    if tensor.ndim == 2:
        return tensor
    permuted = tensor.permute(0, *order)
    return permuted.view(tensor.shape[0], -1) if permuted.is_contiguous() else None


def _column_order(param: torch.Tensor) -> tuple[int, ...]:
    """The dims after the first, outermost first in memory: ``(1, 2, ...)`` for a contiguous
    kernel, ``(2, 3, 1)`` for a channels-last one. Muon's update does not depend on the
    order of a matrix's columns (``NS(u P) = NS(u) P`` for a permutation P), so any order
    that makes the parameter a view is the same update, to rounding."""
    return tuple(sorted(range(1, param.ndim), key=lambda d: -param.stride(d)))


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` that also takes weights of more than 2 dimensions, as matrices.

    Arguments and defaults are ``torch.optim.Muon``'s (``lr=1e-3, weight_decay=0.1,
    momentum=0.95, nesterov=True``, 5 Newton-Schulz steps, ``adjust_lr_fn=None``: Keller
    Jordan's ``sqrt(max(1, A / B))``). A parameter of shape ``(out, d1, d2, ...)`` is
    updated as the matrix ``(out, d1 * d2 * ...)`` (``A``, ``B`` of the lr adjustment are the
    matrix's); its momentum buffer has the parameter's shape. Parameters with fewer than 2
    dimensions are refused (give them to AdamW: :func:`muon_with_adamw`). Demon or any
    momentum schedule: ``MomentumScheduler(opt)`` moves ``group["momentum"]``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        # torch's own argument checks and defaults dict, without its "2-D only" check
        probe = torch.optim.Muon(
            [torch.zeros(1, 1, requires_grad=True)],
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        torch.optim.Optimizer.__init__(self, params, dict(probe.defaults))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            tensor = p[1] if isinstance(p, tuple) else p  # named parameters
            if isinstance(tensor, torch.Tensor) and tensor.ndim < 2:
                raise ConfigError(
                    f"Muon: a parameter of shape {tuple(tensor.shape)}; allowed: weights of 2 "
                    "or more dimensions (optimize biases and gains with AdamW: "
                    "demon_optim.optim.muon_with_adamw does)"
                )
        super().add_param_group({**param_group, "params": params})

    def _init_group(  # type: ignore[override]
        self,
        group: MutableMapping,
        params_with_grad: list[torch.Tensor],
        grads: list[torch.Tensor],
        muon_momentum_bufs: list[torch.Tensor],
    ) -> bool:
        """torch's ``_init_group``, handing torch's update matrix views of N-D weights."""
        for p in group["params"]:
            if p.grad is None:
                continue
            if torch.is_complex(p):
                raise RuntimeError("Muon does not support complex parameters")
            if p.grad.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            order = _column_order(p)
            param, buffer = _matrix(p, order), _matrix(state["momentum_buffer"], order)
            if param is None or buffer is None:  # the update must be written in place
                raise ConfigError(
                    f"Muon: a parameter of shape {tuple(p.shape)} and strides {p.stride()} "
                    "cannot be viewed as a matrix; allowed: contiguous or channels-last weights"
                )
            grad = _matrix(p.grad, order)  # read only: a copy will do
            params_with_grad.append(param)
            grads.append(
                grad if grad is not None else p.grad.permute(0, *order).reshape(len(p), -1)
            )
            muon_momentum_bufs.append(buffer)
        return False  # has_complex


def split_hidden(
    params: Iterable[torch.nn.Parameter],
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(hidden, other)``: the hidden weights, for Muon, and the rest, for AdamW.

    Hidden weights are the parameters of 2 or more dimensions except the first and the last
    of them, in the order of ``params``. For ``model.parameters()`` that is the order the
    layers are defined in, so the first is the input layer (or the embedding) and the last
    the output layer, which Muon's authors give to AdamW with the biases and gains.
    A model defined in another order, or with other input-side matrices (a second
    embedding, a bidirectional RNN's reverse input weights), needs its own split: pass the
    lists to :func:`muon_with_adamw` (``hidden=`` and ``other=``).
    """
    unique = list({id(p): p for p in params}.values())
    weights = [i for i, p in enumerate(unique) if p.ndim >= 2]
    hidden_at = set(weights[1:-1])
    hidden = [p for i, p in enumerate(unique) if i in hidden_at]
    other = [p for i, p in enumerate(unique) if i not in hidden_at]
    return hidden, other


def muon_with_adamw(
    params: Iterable[torch.nn.Parameter] | None = None,
    *,
    lr: float = 0.02,
    momentum: float = 0.95,
    adamw_lr: float = 3e-4,
    adamw_betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    hidden: Iterable[torch.nn.Parameter] | None = None,
    other: Iterable[torch.nn.Parameter] | None = None,
    **muon_options: Any,
) -> CompositeOptimizer:
    """``CompositeOptimizer([Muon(hidden), AdamW(other)])``, as Muon's authors train a model.

    ``params`` (e.g. ``model.parameters()``) is split by :func:`split_hidden`; or give the
    lists yourself as ``hidden`` and ``other``. ``lr``, ``momentum`` (and ``muon_options``:
    ``nesterov``, ``ns_steps``, ``adjust_lr_fn``, ...) are Muon's; ``adamw_lr`` and
    ``adamw_betas`` AdamW's; ``weight_decay`` (decoupled, ``W *= 1 - lr * wd``) both's.
    ``composite.optimizers[0]`` is the Muon (schedule its momentum there), ``[1]`` the
    AdamW (absent when every parameter is hidden).
    """
    if params is not None:
        if hidden is not None or other is not None:
            raise ConfigError("muon_with_adamw: give params, or hidden and other, not both")
        hidden, other = split_hidden(params)
    hidden, other = list(hidden or ()), list(other or ())
    if not hidden:
        shapes = [tuple(p.shape) for p in other if p.ndim >= 2]
        raise ConfigError(
            f"Muon: the model has no hidden weight matrices (its weights {shapes} are its "
            "input and output layers, which go to AdamW); allowed: a model with at least 3 "
            "weight layers, or hidden= given"
        )
    optimizers: list[torch.optim.Optimizer] = [
        Muon(hidden, lr=lr, momentum=momentum, weight_decay=weight_decay, **muon_options)
    ]
    if other:
        optimizers.append(
            torch.optim.AdamW(other, lr=adamw_lr, betas=adamw_betas, weight_decay=weight_decay)
        )
    return CompositeOptimizer(optimizers)
