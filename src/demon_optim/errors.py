"""The one exception type for errors a user can fix.

It subclasses ``ValueError`` so code written for torch-style validation
(``except ValueError``) still catches it.
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
