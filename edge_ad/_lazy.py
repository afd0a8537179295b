"""PEP 562 lazy re-exports, the one implementation the packages share: `__getattr__ = lazy_exports(__name__,
{"Name": "edge_ad.module"})` imports the defining module on first access and caches the name."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` resolving `exports` (name -> defining module) lazily."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
