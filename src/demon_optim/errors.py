"""The exception types meant for users.

:class:`ConfigError` is a bad value the user can fix; it subclasses ``ValueError`` so code
written for torch-style validation (``except ValueError``) still catches it.
:class:`EnvironmentFailure` is the environment failing under a correct configuration (a
full disk, a permission, a lock held too long, a read-only file system); the command line
prints it as one line and exits with code 3.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Exit codes of the ``demon-optim`` command (see :mod:`demon_optim.cli`); ``run()`` reports
#: the one ``demon-optim run`` would exit with.
EXIT_FAILED_TRIALS = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """A bad value supplied by the user: names the field, the value and what is allowed."""


def invalid(field: str, value: object, allowed: str | Iterable[object]) -> ConfigError:
    """Build a ConfigError of the form ``field: got value; allowed: ...``."""
    if not isinstance(allowed, str):
        allowed = ", ".join(map(str, allowed))
    return ConfigError(f"{field}: got {value!r}; allowed: {allowed}")


class EnvironmentFailure(OSError):
    """The environment failed (disk, permissions, lock): one line naming the path and cause.

    It subclasses ``OSError`` so callers that already handle operating-system errors catch it.
    """


def one_line(text: str) -> str:
    """``text`` with its line breaks (and runs of white space around them) as single spaces."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def describe_os_error(error: OSError) -> str:
    """One line naming the path (when the error knows it) and the cause.

    EnvironmentFailure already is such a line; a plain OSError gives
    ``'path': cause`` (``'path' -> 'other': cause`` for a rename).
    """
    if isinstance(error, EnvironmentFailure) and error.filename is None:
        return one_line(str(error))
    cause = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return one_line(cause)
    where = f"'{os.fsdecode(error.filename)}'"
    if error.filename2 is not None:
        where += f" -> '{os.fsdecode(error.filename2)}'"
    return one_line(f"{where}: {cause}")
