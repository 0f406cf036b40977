"""CompositeOptimizer: several torch optimizers, over disjoint parameters, used as one.

Muon (``torch.optim.Muon``) optimizes only the hidden weight matrices; its authors train
everything else (biases, norms, the input and output layers) with AdamW. Training code,
torch's LR schedulers, ``torch.amp.GradScaler`` and the study harness each expect *one*
optimizer, so this class presents the pair as one ``torch.optim.Optimizer``:

* ``param_groups`` is the list of the combined optimizers' own group dicts, in order, so an
  LR scheduler built on the composite moves every optimizer's ``lr`` (each group from its
  own ``initial_lr``), and ``param_groups[0]`` is the first optimizer's first group (what
  the study harness records as the applied lr and momentum);
* ``step()`` evaluates the closure once, then steps each optimizer; ``zero_grad()`` clears
  every optimizer's gradients;
* ``state_dict()`` is ``{"optimizers": [each optimizer's state_dict()]}``; ``load_state_dict``
  checks the whole of it before loading any part, so a checkpoint round-trips losslessly
  (stop, save, load into a fresh composite, continue: bit for bit the uninterrupted run);
* ``state`` is a read-only view of the optimizers' states.

A schedule meant for one of them (Demon on Muon's momentum) is built on that optimizer,
``composite.optimizers[i]``, which stays a working optimizer of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from ..errors import ConfigError, invalid

__all__ = ["CompositeOptimizer"]


class _States(Mapping):
    """The combined optimizers' ``state`` as one read-only mapping (parameter -> state).

    Looked up live, so it follows an optimizer whose ``load_state_dict`` replaced its
    ``state``; a missing parameter is a KeyError (no defaultdict entry is created)."""

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        self._optimizers = optimizers

    def __getitem__(self, param: Any) -> Any:
        for optimizer in self._optimizers:
            if param in optimizer.state:
                return optimizer.state[param]
        raise KeyError(param)

    def __iter__(self) -> Iterator[Any]:
        for optimizer in self._optimizers:
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._optimizers)


class CompositeOptimizer(Optimizer):
    """Step several optimizers over disjoint parameters as one optimizer.

    Args:
        optimizers: the torch optimizers, at least one, no parameter in two of them. Their
            order is the order of ``param_groups``, of ``step()`` and of the state dict.

    >>> hidden, rest = torch.nn.Parameter(torch.ones(4, 4)), torch.nn.Parameter(torch.ones(4))
    >>> opt = CompositeOptimizer([torch.optim.Muon([hidden]), torch.optim.AdamW([rest])])
    >>> [sorted(g)[:2] for g in opt.param_groups]  # the two optimizers' own groups
    [['adjust_lr_fn', 'eps'], ['amsgrad', 'betas']]
    """

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        optimizers = tuple(optimizers)
        if not optimizers:
            raise invalid("optimizers", [], "a non-empty sequence of torch.optim.Optimizer")
        seen: dict[int, int] = {}
        for i, optimizer in enumerate(optimizers):
            if not isinstance(optimizer, Optimizer):
                raise invalid(f"optimizers[{i}]", type(optimizer).__name__, "torch optimizers")
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if id(param) in seen and seen[id(param)] != i:
                        raise ConfigError(
                            f"optimizers[{i}]: a parameter of shape {tuple(param.shape)} is "
                            f"also in optimizers[{seen[id(param)]}]; allowed: optimizers over "
                            "disjoint parameters"
                        )
                    seen[id(param)] = i
        self.optimizers = optimizers
        self._initialised = False
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})  # torch's hooks and step patching; groups replaced below
        self._initialised = True
        self._link()

    def _link(self) -> None:
        """Point ``param_groups`` (in place) and ``state`` at the optimizers' current ones."""
        self.param_groups[:] = [g for o in self.optimizers for g in o.param_groups]
        self.state = _States(self.optimizers)  # type: ignore[assignment]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self._initialised:
            raise ConfigError(
                "CompositeOptimizer.add_param_group: add the group to one of the optimizers "
                "it combines (composite.optimizers[i].add_param_group), which the composite "
                "then steps"
            )
        super().add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` (if any) once, then step each optimizer in order."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"optimizers": [state_dict() of each optimizer, in order]}``."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Load each optimizer's part, all or nothing: when one optimizer refuses its part
        (torch checks the groups' sizes; the Demon and reference optimizers every value),
        those loaded before it are restored, so every optimizer is left as it was.

        As with torch's optimizers, the loaded state may share tensors with ``state_dict``
        (load a copy, e.g. from ``torch.load``, to keep using the original).
        """
        parts = state_dict.get("optimizers") if isinstance(state_dict, Mapping) else None
        if not isinstance(parts, Sequence) or len(parts) != len(self.optimizers):
            raise invalid(
                "state_dict",
                type(state_dict).__name__ if not isinstance(state_dict, Mapping) else parts,
                f"a CompositeOptimizer state dict: {{'optimizers': [{len(self.optimizers)} "
                "state dicts]}",
            )
        saved = [optimizer.state_dict() for optimizer in self.optimizers]
        loaded = 0
        try:
            for optimizer, part in zip(self.optimizers, parts, strict=True):
                optimizer.load_state_dict(part)
                loaded += 1
        except Exception:
            for optimizer, before in zip(self.optimizers[:loaded], saved, strict=False):
                optimizer.load_state_dict(before)
            raise
        finally:
            self._link()

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizers": self.optimizers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["optimizers"])  # type: ignore[misc]

    def __repr__(self) -> str:
        inner = ", ".join(type(o).__name__ for o in self.optimizers)
        return f"CompositeOptimizer({inner}; {len(self.param_groups)} groups)"
