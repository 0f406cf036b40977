"""Task registry of the study harness.

A task is a model on a data set with its loss, metric and default budget
(:class:`~demon_optim.study.tasks.base.Task`). Adding one is one module that calls
:func:`register_task` plus one import line at the bottom of this file.
"""

from demon_optim.study.datasets import DataUnavailableError
from demon_optim.study.tasks.base import (
    ClassificationTask,
    FinalOutputs,
    Split,
    Task,
    TaskData,
    clear_data_cache,
)
from demon_optim.study.tasks.registry import (
    get_task,
    list_tasks,
    register,
    register_task,
    task_names,
)

__all__ = [
    "ClassificationTask",
    "DataUnavailableError",
    "FinalOutputs",
    "Split",
    "Task",
    "TaskData",
    "clear_data_cache",
    "get_task",
    "list_tasks",
    "register",
    "register_task",
    "task_names",
]

# One line per task module; importing it registers its tasks.
from demon_optim.study.tasks import (  # noqa: F401
    cifar,
    digits,
    fmnist,
    glue,
    mnist,
    mnist1d,
    ncsn,
    ptb,
    rotten_tomatoes,
    stl10,
    tinyimagenet,
)
