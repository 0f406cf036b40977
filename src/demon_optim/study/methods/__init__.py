"""Study methods: an optimizer (and its schedules) with its hyperparameters' default grids.

A method is what a study compares: a builder, ``build(params, *, budget, **hyperparameters)``,
returning a torch optimizer or a :class:`Training` (the optimizer plus the hooks that move
its schedules), and the default values of each hyperparameter. Built-in and user methods
alike come in through :func:`register_method`:

* :mod:`~demon_optim.study.methods.hyperparameters`: values, their checks and printing;
* :mod:`~demon_optim.study.methods.method`: :class:`Budget`, :class:`Training`,
  :class:`Method` (configurations and grids);
* :mod:`~demon_optim.study.methods.registry`: the registry;
* :mod:`~demon_optim.study.methods.builtin`: the paper's comparison and the references;
* :mod:`~demon_optim.study.methods.baselines`: today's baselines (Muon, Lion, Schedule-Free).
"""

# registers the built-ins: the paper's comparison (builtin), then today's baselines
from demon_optim.study.methods import baselines, builtin  # noqa: F401
from demon_optim.study.methods.hyperparameters import (
    RESERVED_NAMES,
    Hyperparameter,
    Value,
    format_config,
    format_value,
)
from demon_optim.study.methods.method import Budget, Method, Training, applied_reader
from demon_optim.study.methods.registry import (
    get_method,
    list_methods,
    method_names,
    register_method,
)

__all__ = [
    "RESERVED_NAMES",
    "Budget",
    "Hyperparameter",
    "Method",
    "Training",
    "Value",
    "applied_reader",
    "format_config",
    "format_value",
    "get_method",
    "list_methods",
    "method_names",
    "register_method",
]
