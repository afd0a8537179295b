"""One small registry for every plug-in point (inference backends, frame sources, PLC adapters, station recorders):
a name, a factory, whether it can run here (`available()`), how to install what it needs, and the options it
takes. Factories are named as "module:attribute" and imported on first use, so listing the registry never imports
an optional package."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edge_ad.errors import ConfigError
from edge_ad.optional import install_hint, installed

T = TypeVar("T")


@dataclass(frozen=True)
class Plugin(Generic[T]):
    """One entry: `factory` is "module:attribute" (a callable returning a T); `needs` the optional modules it
    imports; `options` the keyword options it accepts; `description` one line for listings and errors."""

    name: str
    factory: str
    description: str
    needs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    probe: Callable[[], bool] | None = field(default=None, compare=False)

    def available(self) -> bool:
        """Its optional modules import (and its own probe, if any, says yes)."""
        return all(installed(m) for m in self.needs) and (self.probe is None or self.probe())

    def install_hint(self) -> str:
        missing = [m for m in self.needs if not installed(m)]
        return "; ".join(install_hint(m) for m in missing) or "installed"

    def load(self) -> Callable[..., T]:
        """The factory, imported now."""
        module, _, attr = self.factory.partition(":")
        fn: Callable[..., T] = getattr(importlib.import_module(module), attr)
        return fn

    def module_attr(self, attr: str) -> Any:
        """Another attribute of the factory's module (e.g. a backend module's `available(package)`)."""
        return getattr(importlib.import_module(self.factory.partition(":")[0]), attr)


class Registry(Generic[T]):
    """Plug-ins of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._plugins: dict[str, Plugin[T]] = {}

    def register(self, plugin: Plugin[T]) -> Plugin[T]:
        if plugin.name in self._plugins:
            raise ConfigError(f"{self.kind} {plugin.name!r}: registered twice")
        self._plugins[plugin.name] = plugin
        return plugin

    def get(self, name: str) -> Plugin[T]:
        if name not in self._plugins:
            raise ConfigError(f"{self.kind}: unknown {name!r}; expected one of {', '.join(self._plugins)}")
        return self._plugins[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Build plug-in `name`; ConfigError naming what to install when it cannot run here."""
        plugin = self.get(name)
        missing = [m for m in plugin.needs if not installed(m)]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs {', '.join(missing)}: {plugin.install_hint()}")
        return plugin.load()(*args, **kwargs)

    def names(self) -> list[str]:
        return list(self._plugins)

    def __iter__(self) -> Iterator[Plugin[T]]:
        return iter(self._plugins.values())

    def __contains__(self, name: object) -> bool:
        return name in self._plugins
