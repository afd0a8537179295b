"""`edge_ad.evaluate(run)` and `edge_ad.export(run)` are also the names of subpackages (`edge_ad.evaluate.metrics`,
`edge_ad.export.exporter`): once a subpackage is imported, `edge_ad.evaluate` *is* that module, so the module itself
is made callable and forwards to `edge_ad.api`. Nothing else about the modules changes."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(module_name: str, api_name: str) -> None:
    """Calling module `module_name` calls `edge_ad.api.<api_name>` (imported on the first call)."""

    class _Callable(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module("edge_ad.api"), api_name)(*args, **kwargs)

    _Callable.__call__.__doc__ = f"edge_ad.api.{api_name}: see its docstring."
    sys.modules[module_name].__class__ = _Callable
