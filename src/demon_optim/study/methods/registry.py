"""The methods registry; :func:`register_method` is its only door, for built-ins and users."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from demon_optim.errors import ConfigError, invalid
from demon_optim.study.methods.hyperparameters import Hyperparameter, hyperparameter
from demon_optim.study.methods.method import Build, Method

_METHODS: dict[str, Method] = {}

NAME_MAX_LENGTH = 100


def _name(field: str, value: object) -> str:
    allowed = (
        f"non-empty strings of at most {NAME_MAX_LENGTH} characters, without line breaks, "
        "control characters or surrounding spaces"
    )
    if (
        not isinstance(value, str)
        or not value
        or len(value) > NAME_MAX_LENGTH
        or value != value.strip()
        or not value.isprintable()
    ):
        raise invalid(field, value, allowed)
    return value


def register_method(
    name: str,
    *,
    build: Build,
    grid: Mapping[str, object],
    family: str | None = None,
    reference: bool = False,
    schedule: str | None = None,
    summary: str = "",
    requires: Mapping[str, str] | None = None,
) -> Method:
    """Register a study method: an optimizer (and its schedules) with its default grid.

    ``build(params, *, budget, **hyperparameters)`` gets the model's parameters, the trial's
    :class:`~demon_optim.study.methods.Budget` (``budget.total_steps`` is T) and one value per
    hyperparameter, and returns a ``torch.optim.Optimizer`` or a
    :class:`~demon_optim.study.methods.Training` (the optimizer plus ``after_step`` /
    ``after_epoch`` hooks). ``grid`` maps each hyperparameter to its default values: a list is
    the list of values, anything else one value (a tuple is one tuple-valued setting), or a
    :class:`~demon_optim.study.methods.Hyperparameter` with its own check. ``family``: the
    table and ranking the method joins (``"sgdm"``, ``"adam"``, a new name; default: the
    method's name); ``reference=True`` reports it beside the ranking, not in it;
    ``schedule``: the name the Top-k table matches across families (default: ``name``).
    ``requires``: ``{module: install command}`` of optional packages ``build`` imports; a
    study naming the method stops before any training when one is missing, with a
    one-line error giving the command.

    Registering the same builder again under its name is fine (a plugin imported twice);
    another builder under a taken name is a ConfigError naming both.
    """
    name = _name("method name", name)
    if not callable(build):
        raise invalid(f"method {name}: build", build, "a callable build(params, *, budget, **hp)")
    if not isinstance(grid, Mapping):
        raise invalid(f"method {name}: grid", grid, "a mapping of hyperparameter -> values")
    if not isinstance(reference, bool):
        raise invalid(f"method {name}: reference", reference, "True or False")
    family = _name(f"method {name}: family", name if family is None else family)
    schedule = _name(f"method {name}: schedule", name if schedule is None else schedule)
    if not isinstance(summary, str):
        raise invalid(f"method {name}: summary", summary, "a string")
    if requires is None:
        requires = {}
    if not isinstance(requires, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in requires.items()
    ):
        raise invalid(f"method {name}: requires", requires, "a mapping module -> install command")
    hyperparameters: dict[str, Hyperparameter] = {
        key: hyperparameter(key, raw, f"method {name}: grid") for key, raw in grid.items()
    }
    source = f"{getattr(build, '__module__', '?')}.{getattr(build, '__qualname__', repr(build))}"
    method = Method(
        name=name,
        build_fn=build,
        hyperparameters=hyperparameters,
        family=family,
        reference=reference,
        schedule=schedule,
        summary=summary,
        source=source,
        requires=tuple(requires.items()),
    )
    existing = _METHODS.get(name)
    if existing is not None and existing.source != source:
        raise ConfigError(
            f"method name {name!r}: already registered by {defined_in(existing.build_fn)}, so "
            f"{defined_in(build)} cannot register it; allowed: a name no other method has"
        )
    _METHODS[name] = method
    return method


def defined_in(obj: object) -> str:
    """Where a builder or class comes from, for messages: a plugin file by its path, the
    built-ins as such, anything else by its module and name."""
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or repr(obj)
    if module.startswith("demon_optim.study.methods."):
        return "demon-optim's built-in methods"
    file = getattr(sys.modules.get(module), "__file__", None)
    if module.startswith("demon_optim_plugin_") and file:
        return f"{qualname} in {file}"
    return f"{module}.{qualname}"


def get_method(name: str) -> Method:
    """The method called ``name``; a ConfigError listing the choices if there is none."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise invalid("method", name, method_names()) from None


def method_names() -> list[str]:
    """Registered method names, in registration order (the built-ins: SGDM, then Adam)."""
    return list(_METHODS)


def list_methods() -> list[Method]:
    return list(_METHODS.values())
