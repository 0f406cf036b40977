"""The study harness: tasks, methods, trials, executors and the results store."""

# Public names of the harness, imported on first use (PEP 562) so that importing one part
# (e.g. the task registry in a worker) does not import all of them.
_EXPORTS = {
    "Task": "tasks",
    "ClassificationTask": "tasks",
    "Split": "tasks",
    "TaskData": "tasks",
    "register_task": "tasks",
    "get_task": "tasks",
    "Study": "spec",
    "TrialSpec": "spec",
    "TrialAbout": "spec",
    "run": "runner",
    "StudyRun": "runner",
    "load_study": "spec",
    "expand": "spec",
    "Method": "methods",
    "Budget": "methods",
    "Training": "methods",
    "Hyperparameter": "methods",
    "register_method": "methods",
    "get_method": "methods",
    "list_methods": "methods",
    "method_names": "methods",
    "TrialResult": "trial",
    "run_trial": "trial",
    "ResultStore": "store",
    "Executor": "executors",
    "LocalExecutor": "executors",
    "run_study": "executors",
    "summarize": "results",
    "to_markdown": "results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
