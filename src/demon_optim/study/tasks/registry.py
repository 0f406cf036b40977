"""The task registry: name -> Task instance; :func:`register_task` is its public door."""

from __future__ import annotations

from typing import TypeVar

from demon_optim import _checks
from demon_optim.errors import ConfigError, invalid
from demon_optim.study.tasks.base import Task

_TASKS: dict[str, Task] = {}

T = TypeVar("T", bound="Task | type[Task]")

#: The class attributes a Task must set (``Task``'s docstring says what each holds).
REQUIRED_ATTRIBUTES = (
    "name",
    "summary",
    "metric",
    "higher_is_better",
    "batch_size",
    "epochs",
    "data_key",
)


def register_task(task: T) -> T:
    """Register a :class:`Task` subclass (or an instance) under its ``name``.

    Returns its argument, so it works as a class decorator::

        @register_task
        class MyTask(ClassificationTask):
            name = "my-task"
            ...

    Registering the same class again is fine (a plugin imported twice, even from a fresh
    import of its file: the same module and class name count as the same class); another
    class under a name already taken, a missing class attribute or an unimplemented hook is
    a ConfigError naming it.
    """
    cls = task if isinstance(task, type) else type(task)
    label = f"{cls.__module__}.{cls.__qualname__}"
    if not issubclass(cls, Task):
        raise invalid("register_task", label, "a subclass of demon_optim.study.Task")
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    if missing:
        raise invalid(
            f"task class {label}",
            f"no {', '.join(missing)}",
            f"a Task subclass that sets {', '.join(REQUIRED_ATTRIBUTES)}",
        )
    unimplemented = sorted(getattr(cls, "__abstractmethods__", ()))
    if unimplemented:
        raise invalid(
            f"task class {label}",
            f"{', '.join(unimplemented)} not implemented",
            "a Task subclass that implements _load_data, build_model, loss and evaluate "
            "(ClassificationTask gives the last two)",
        )
    _check_attributes(cls, label)
    instance = task() if isinstance(task, type) else task
    existing = _TASKS.get(cls.name)
    if existing is not None and not _same_class(type(existing), cls):
        from demon_optim.study.methods.registry import defined_in

        raise ConfigError(
            f"task name {cls.name!r}: already registered by {defined_in(type(existing))}, so "
            f"{defined_in(cls)} cannot register it; allowed: a name no other task has"
        )
    _TASKS[cls.name] = instance
    return task


register = register_task  # the name the built-in task modules use


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _check_attributes(cls: type[Task], label: str) -> None:
    """The class attributes' types, checked once here rather than deep inside a trial."""

    def bad(attribute: str, allowed: str) -> ConfigError:
        return invalid(f"task class {label}: {attribute}", getattr(cls, attribute), allowed)

    for attribute in ("name", "summary", "metric", "data_key"):
        value = getattr(cls, attribute)
        if not isinstance(value, str) or not value.strip():
            raise bad(attribute, "a non-empty string")
    if "\n" in cls.name or cls.name != cls.name.strip():
        raise bad("name", "a name without line breaks or surrounding spaces")
    if not isinstance(cls.higher_is_better, bool):
        raise bad("higher_is_better", "True or False")
    for attribute in ("batch_size", "epochs"):
        value = getattr(cls, attribute)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(attribute, "integers >= 1")
    if cls.target is not None:
        allowed = f"None or a finite number (the validation {cls.metric} to reach)"
        _checks.number(f"task class {label}: target", cls.target, allowed)


def get_task(name: str) -> Task:
    """The registered task called ``name``; a ConfigError listing the choices if there is none."""
    try:
        return _TASKS[name]
    except KeyError:
        raise invalid("task", name, task_names()) from None


def list_tasks() -> list[Task]:
    """All registered tasks, sorted by name."""
    return [_TASKS[name] for name in task_names()]


def task_names() -> list[str]:
    """The names of all registered tasks, sorted."""
    return sorted(_TASKS)
