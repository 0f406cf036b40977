"""Study plugins: a user's tasks and methods, imported before a study is validated.

A study file's ``plugins = ["my_tasks.py", "mypackage.tasks"]`` names Python files
(relative to the study file) or importable modules that call
:func:`~demon_optim.study.register_task` / :func:`~demon_optim.study.register_method`. Each
becomes a :class:`Plugin` that travels with every trial spec, outside the trial id: a worker
process (spawned locally, or on another node of a Ray cluster) imports it before it runs
the trial. A file plugin carries its source text, so a node without the file runs the same
code; the store records its path and sha256, not its code.

A file is imported as a module of its own (named after its path, so importing it again
replaces what it registered instead of clashing with it), with its folder on ``sys.path`` so
that it can import its neighbours (a plugin for a Ray cluster should not: only the plugin
file travels). Every failure is one ConfigError line naming the plugin: a missing file, a
syntax error (with its line), an exception while importing (with the line it came from), or
a plugin that registers no task or method.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pathlib
import re
import sys
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from demon_optim.errors import ConfigError, invalid

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ALLOWED = (
    "a list of plugins: Python files (.py, relative to the study file) or importable module "
    "names, e.g. ['my_tasks.py', 'mypackage.tasks']"
)


@dataclass(frozen=True)
class Plugin:
    """One plugin: as the study named it, the file it was read from, and that file's digest.

    ``path`` is None for a module plugin whose module has no file; ``source`` (a file
    plugin's text) is what a worker executes, and is never stored.
    """

    name: str
    path: str | None = None
    sha256: str | None = None
    module: str | None = None  # set for a module plugin: the module's import name
    source: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_file(self) -> bool:
        return self.module is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "module": self.module}

    @classmethod
    def from_json(cls, data: Any) -> Plugin:
        return cls(
            name=str(data["name"]),
            path=data.get("path"),
            sha256=data.get("sha256"),
            module=data.get("module"),
        )


# path (file plugins) or module name -> sha256 of what this process imported
_LOADED: dict[str, str | None] = {}


def load_plugins(raw: object, base_dir: pathlib.Path | None = None) -> tuple[Plugin, ...]:
    """Resolve and import a study's ``plugins`` entry; the plugins, in order.

    ``base_dir``: the study file's folder (relative paths are taken from there; None: the
    current folder). Raises ConfigError (one line, naming the plugin) on any failure.
    """
    if not isinstance(raw, list):
        raise invalid("plugins", raw, _ALLOWED)
    plugins = []
    for i, entry in enumerate(raw):
        where = f"plugins[{i}]"
        if not isinstance(entry, str) or not entry.strip() or "\0" in entry:
            raise invalid(where, entry, _ALLOWED)
        plugin = _resolve(entry, base_dir, where)
        if plugin in plugins:
            raise invalid("plugins", raw, "lists without repeated plugins")
        _import(plugin, where, check_registers=True)
        plugins.append(plugin)
    return tuple(plugins)


def import_plugins(plugins: Sequence[Plugin]) -> None:
    """Import the plugins of a trial spec in this (worker) process, once per version of each.

    A file plugin runs from the source it carries (the file need not exist here).
    """
    for plugin in plugins:
        _import(plugin, f"plugin {plugin.name!r}", check_registers=False)


def _is_path(entry: str) -> bool:
    """A file, not a module name: ends in .py, has a separator, or is no dotted name."""
    return entry.endswith(".py") or os.sep in entry or not _MODULE_NAME.fullmatch(entry)


def _resolve(entry: str, base_dir: pathlib.Path | None, where: str) -> Plugin:
    if not _is_path(entry):
        return _resolve_module(entry, where)
    path = pathlib.Path(os.path.expanduser(entry))
    if not path.is_absolute():
        path = (base_dir or pathlib.Path.cwd()) / path
    path = pathlib.Path(os.path.realpath(path))
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        raise invalid(where, entry, f"an existing Python file ({path}: {why}) or a module name")
    try:
        data = path.read_bytes()
        source = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read {path}: {error}") from None
    return Plugin(entry, str(path), hashlib.sha256(data).hexdigest(), None, source)


def _resolve_module(entry: str, where: str) -> Plugin:
    try:
        spec = importlib.util.find_spec(entry)
    except (ImportError, ValueError) as error:  # a missing parent package
        raise invalid(where, entry, f"an importable module name ({error})") from None
    if spec is None:
        raise invalid(
            where, entry, f"an importable module name (no module named {entry!r} on sys.path)"
        )
    origin = spec.origin if spec.origin and os.path.isfile(spec.origin) else None
    digest = None
    if origin is not None:
        try:
            digest = hashlib.sha256(pathlib.Path(origin).read_bytes()).hexdigest()
        except OSError:
            digest = None
    return Plugin(entry, origin, digest, entry)


def module_name(path: str) -> str:
    """The name a file plugin is imported under: stable per path, unlike any real module."""
    stem = re.sub(r"\W", "_", pathlib.Path(path).stem) or "plugin"
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"demon_optim_plugin_{stem}_{digest}"


def _registered() -> tuple[dict[str, str], dict[str, str]]:
    """(task name -> defining module, method name -> defining module) right now."""
    from demon_optim.study.methods import list_methods
    from demon_optim.study.tasks import list_tasks

    tasks = {task.name: type(task).__module__ for task in list_tasks()}
    methods = {m.name: getattr(m.build_fn, "__module__", "") for m in list_methods()}
    return tasks, methods


def _import(plugin: Plugin, where: str, check_registers: bool) -> None:
    key = plugin.module or plugin.path or plugin.name
    if key in _LOADED and _LOADED[key] == plugin.sha256:
        return
    before = _registered() if check_registers else ({}, {})
    shown = plugin.path or plugin.name
    if plugin.is_file:
        name = _import_file(plugin, where)
    else:
        name = plugin.module or plugin.name
        try:
            importlib.import_module(name)
        except SyntaxError as error:
            raise ConfigError(f"{where}: {_syntax(error)}") from None
        except Exception as error:  # any exception of the user's code: one line
            raise ConfigError(f"{where}: importing {name} raised {_raised(error, None)}") from None
    if check_registers:
        tasks, methods = _registered()
        new = [t for t, m in tasks.items() if t not in before[0] or m == name]
        new += [t for t, m in methods.items() if t not in before[1] or m == name]
        if not new:
            raise ConfigError(
                f"{where}: {shown} registers no task or method (decorate a Task subclass with "
                "demon_optim.study.register_task, or call demon_optim.study.register_method)"
            )
    _LOADED[key] = plugin.sha256


def _import_file(plugin: Plugin, where: str) -> str:
    assert plugin.path is not None
    source = plugin.source
    if source is None:  # a spec rebuilt from JSON: read the file (it must exist here)
        try:
            source = pathlib.Path(plugin.path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{where}: cannot read {plugin.path}: {error}") from None
    name = module_name(plugin.path)
    try:
        code = compile(source, plugin.path, "exec")
    except (SyntaxError, ValueError) as error:
        raise ConfigError(f"{where}: {_syntax(error, plugin.path)}") from None
    module = types.ModuleType(name)
    module.__file__ = plugin.path
    folder = str(pathlib.Path(plugin.path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses and pickle look classes up here
    try:
        exec(code, module.__dict__)
    except BaseException as error:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        if not isinstance(error, Exception):
            raise
        raise ConfigError(
            f"{where}: importing {plugin.path} raised {_raised(error, plugin.path)}"
        ) from None
    return name


def _syntax(error: SyntaxError | ValueError, path: str | None = None) -> str:
    if isinstance(error, SyntaxError):
        where = error.filename or path or "?"
        return f"{where}, line {error.lineno}: {type(error).__name__}: {error.msg}"
    return f"{path}: cannot compile it: {error}"


def _raised(error: BaseException, path: str | None) -> str:
    """``Type: message (line N)``: the deepest line of the plugin's file in the traceback."""
    message = " ".join(str(error).split()) or "(no message)"
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if path is None or frame.filename == path
    ]
    line = f" (line {lines[-1]})" if lines and path is not None else ""
    return f"{type(error).__name__}: {message}{line}"
