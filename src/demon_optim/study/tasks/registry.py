"""The task registry: name -> Task instance."""

from __future__ import annotations

from typing import TypeVar

from demon_optim.errors import invalid
from demon_optim.study.tasks.base import Task

_TASKS: dict[str, Task] = {}

T = TypeVar("T", bound="Task | type[Task]")


def register(task: T) -> T:
    """Add a task to the registry; takes an instance or a class (instantiated with no arguments).

    Returns its argument, so it also works as a class decorator::

        @register
        class MyTask(ClassificationTask):
            name = "my-task"
            ...
    """
    instance = task() if isinstance(task, type) else task
    if not isinstance(instance, Task):
        raise TypeError(f"register() expects a Task, got {type(instance).__name__}")
    name = instance.name
    if name in _TASKS and type(_TASKS[name]) is not type(instance):
        raise ValueError(f"task {name!r} is already registered by {type(_TASKS[name]).__name__}")
    _TASKS[name] = instance
    return task


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
