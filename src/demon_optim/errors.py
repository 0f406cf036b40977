"""The exception types meant for users.

:class:`ConfigError` is a bad value the user can fix; it subclasses ``ValueError`` so code
written for torch-style validation (``except ValueError``) still catches it.
:class:`EnvironmentFailure` is the environment failing under a correct configuration (a
full disk, a permission, a lock held too long, a read-only file system); the command line
prints it as one line and exits with code 3.
"""

from __future__ import annotations

from collections.abc import Iterable


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
