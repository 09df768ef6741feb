"""Plugin discovery: turn a reference from plugins.yaml into a :class:`~bot_core.plugin.Plugin` class.

A reference is either

* a name registered in the ``relaydesk.plugins`` entry-point group (``echo``, ``telegram``...): any
  installed distribution can add plugins by declaring, in its ``pyproject.toml``::

      [project.entry-points."relaydesk.plugins"]
      orders = "mypkg.plugins:OrderStatus"

* or a dotted path to a class: ``package.module:Class`` (explicit) or ``package.module.Class`` (the
  longest importable module prefix is used). Nested attributes work too: ``package.module:Outer.Inner``.
"""

from __future__ import annotations

import difflib
import importlib
import re
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from bot_core.plugin import Plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginNotFound", "available_plugins", "resolve_plugin"]

ENTRY_POINT_GROUP = "relaydesk.plugins"
"""The entry-point group in which installed distributions register plugin classes."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class PluginNotFound(LookupError):
    """A plugin reference could not be turned into a Plugin class; ``str()`` explains why."""

    def __init__(self, ref: str, message: str) -> None:
        super().__init__(message)
        self.ref = ref
        self.message = message

    def __str__(self) -> str:
        return self.message


def _registered() -> dict[str, EntryPoint]:
    """The entry points of the plugin group by name (the first distribution wins on a clash)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def available_plugins() -> dict[str, str]:
    """The registered plugin names, sorted, each with the ``module:Class`` it points at."""
    return {name: ep.value for name, ep in sorted(_registered().items())}


def resolve_plugin(ref: str) -> type[Plugin]:
    """Return the Plugin subclass that ``ref`` names: a registered name or a dotted path.

    Raises :class:`PluginNotFound` with a message saying what is wrong: an unknown name (with the
    known names), a module that does not exist or fails to import, a missing attribute, or an object
    that is not a Plugin subclass.
    """
    ref = ref.strip()
    if not ref:
        raise PluginNotFound(ref, "empty plugin reference")
    registered = _registered()
    ep = registered.get(ref)
    if ep is not None:
        return _load_entry_point(ref, ep)
    if ":" in ref or "." in ref:
        return _check_plugin_class(ref, _resolve_dotted(ref))
    raise PluginNotFound(ref, _unknown_name_message(ref, sorted(registered)))


def _unknown_name_message(ref: str, known: list[str]) -> str:
    message = f"unknown plugin {ref!r}"
    close = difflib.get_close_matches(ref, known, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    if known:
        message += f"; known plugins: {', '.join(known)}"
    else:
        message += f"; no plugins are registered in the {ENTRY_POINT_GROUP!r} entry-point group"
    return message + "; or name a class by dotted path 'package.module:Class'"


def _load_entry_point(ref: str, ep: EntryPoint) -> type[Plugin]:
    try:
        loaded: object = ep.load()
    except Exception as exc:
        raise PluginNotFound(
            ref,
            f"plugin {ref!r} is registered as {ep.value!r} but cannot be loaded: {type(exc).__name__}: {exc}",
        ) from exc
    return _check_plugin_class(ref, loaded, registered_as=ep.value)


def _check_plugin_class(ref: str, obj: object, *, registered_as: str | None = None) -> type[Plugin]:
    where = f"{ref!r}" if registered_as is None else f"{ref!r} (registered as {registered_as!r})"
    if not isinstance(obj, type):
        raise PluginNotFound(
            ref, f"{where} is not a Plugin subclass: it is a {type(obj).__name__}, not a class"
        )
    if obj is Plugin:
        raise PluginNotFound(ref, f"{where} is the Plugin base class itself, not a plugin")
    if not issubclass(obj, Plugin):
        raise PluginNotFound(
            ref, f"{where} is not a Plugin subclass: class {obj.__qualname__} does not derive from Plugin"
        )
    return obj


def _valid_dotted(text: str) -> bool:
    return all(_IDENTIFIER.match(part) for part in text.split("."))


def _is_missing(exc: ModuleNotFoundError, module_name: str) -> bool:
    """Whether ``exc`` says that ``module_name`` itself (or a parent package) does not exist.

    A ModuleNotFoundError raised for some *other* module means ``module_name`` exists but one of its
    own imports is missing, which is a different problem to report.
    """
    missing = exc.name
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))


def _import(ref: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _is_missing(exc, module_name):
            raise PluginNotFound(
                ref, f"cannot resolve plugin {ref!r}: module {module_name!r} not found ({exc})"
            ) from exc
        raise PluginNotFound(
            ref, f"cannot resolve plugin {ref!r}: importing module {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise PluginNotFound(
            ref,
            f"cannot resolve plugin {ref!r}: importing module {module_name!r} failed: "
            f"{type(exc).__name__}: {exc}",
        ) from exc


def _get_attribute_path(ref: str, module: ModuleType, attr_path: str) -> object:
    obj: object = module
    owner = f"module {module.__name__!r}"
    walked = module.__name__
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginNotFound(
                ref, f"cannot resolve plugin {ref!r}: {owner} has no attribute {attr!r}"
            ) from None
        walked = f"{walked}.{attr}"
        owner = repr(walked)
    return obj


def _resolve_dotted(ref: str) -> object:
    if ":" in ref:
        module_name, _, attr_path = ref.partition(":")
        if not (module_name and attr_path and _valid_dotted(module_name) and _valid_dotted(attr_path)):
            raise PluginNotFound(
                ref, f"invalid plugin reference {ref!r}: expected 'package.module:Class' or a plugin name"
            )
        return _get_attribute_path(ref, _import(ref, module_name), attr_path)

    if not _valid_dotted(ref):
        raise PluginNotFound(
            ref, f"invalid plugin reference {ref!r}: expected 'package.module.Class' or a plugin name"
        )
    parts = ref.split(".")
    # Try the longest module prefix first: ``a.b.C`` may be module ``a.b`` + class ``C``.
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if _is_missing(exc, module_name):
                continue
            raise PluginNotFound(
                ref, f"cannot resolve plugin {ref!r}: importing module {module_name!r} failed: {exc}"
            ) from exc
        except Exception as exc:
            raise PluginNotFound(
                ref,
                f"cannot resolve plugin {ref!r}: importing module {module_name!r} failed: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        if split < len(parts) - 1 and not hasattr(module, parts[split]):
            # ``a.b.C`` where ``a`` imports but neither ``a.b`` (module) nor ``a:b`` (attribute) exists.
            raise PluginNotFound(
                ref,
                f"cannot resolve plugin {ref!r}: module {'.'.join(parts[: split + 1])!r} not found "
                f"(and module {module_name!r} has no attribute {parts[split]!r})",
            )
        return _get_attribute_path(ref, module, ".".join(parts[split:]))
    raise PluginNotFound(ref, f"cannot resolve plugin {ref!r}: module {parts[0]!r} not found")
