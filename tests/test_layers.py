"""The dependency rules of the package, checked statically over the AST of every module (imports inside functions
and under TYPE_CHECKING included): which top-level part may import which, no cycles between parts or between
modules, the line side never imports the lab side or a training library, nothing in the library imports the CLI,
and no two modules share a name. A violation is fixed where it is, never allow-listed here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edge_ad"

#: shared by both halves: errors, files, images, back-off, optional imports, plug-in registry, passwords, TensorRT
#: op facts; they import only each other (and `edge_ad` itself only for the version)
BASE = {"edge_ad": set(), "errors": set(), "fileio": {"errors"}, "backoff": {"errors"}, "imageio": {"errors", "fileio"},
        "_lazy": set(), "optional": {"errors"}, "plugins": {"errors", "optional"}, "passwords": {"errors"},
        "trt_ops": set()}
B = set(BASE)
LINE = {"runtime": B, "sources": B | {"runtime"}, "station": B | {"runtime"},
        "plc": B | {"runtime", "sources", "station"}, "traceability": B | {"runtime", "station"},
        "pipeline": B | {"runtime", "sources", "station"}, "capture": B | {"runtime", "sources", "station", "plc"},
        "hmi": B | {"runtime", "station", "traceability", "capture"},
        "services": B | {"runtime", "station", "traceability", "pipeline", "hmi"}}
LAB = {"models": B | {"runtime"}, "data": B | {"runtime"}, "evaluate": B | {"runtime", "data", "models"},
       "train": B | {"runtime", "data", "models", "evaluate"}, "export": B | {"runtime", "data", "models", "evaluate"},
       "api": B | {"runtime", "data", "models", "evaluate", "train", "export"}}
ALLOWED: dict[str, set[str]] = {**{k: v | {"_lazy"} for k, v in BASE.items()}, **LINE, **LAB}
#: the CLI may use everything; nothing may use the CLI
ALLOWED["cli"] = set(ALLOWED) - {"cli"}
#: third-party modules of the lab side (`edge-ad[train]`): never imported by the line side
LAB_LIBRARIES = {"torch", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime.quantization", "safetensors",
                 "sklearn", "skimage", "scipy", "tqdm"}


def _module_name(p: Path) -> str:
    parts = ["edge_ad", *p.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edge_ad"


def _imports(path: Path, *, type_checking: bool = True) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import in the file, inside functions too."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    if not type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for b in node.body for n in ast.walk(b)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                yield (full if full in MODULES else node.module), node.lineno


def _internal(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_every_part_is_in_the_table() -> None:
    assert {_part(m) for m in MODULES} == set(ALLOWED)


def test_parts_import_only_what_the_table_allows() -> None:
    bad = []
    for module, path in MODULES.items():
        src = _part(module)
        for name, line in _imports(path):
            target = _internal(name) if name.startswith("edge_ad") else None
            if target is not None and (dst := _part(target)) != src and dst not in ALLOWED[src]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} -> {dst} ({name})")
    assert bad == []


def test_the_line_side_never_imports_a_training_library() -> None:
    line = set(LINE) | set(BASE)
    bad = [f"{path.relative_to(ROOT.parent)}:{line_no}: {name}" for module, path in MODULES.items()
           if _part(module) in line for name, line_no in _imports(path)
           if name in LAB_LIBRARIES or name.split(".")[0] in LAB_LIBRARIES - {"onnxruntime.quantization"}]
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                out.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_cycles_between_parts_or_between_modules() -> None:
    parts: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for name, _ in _imports(path, type_checking=False):
            target = _internal(name) if name.startswith("edge_ad") else None
            if target is None or target == module:
                continue
            modules.setdefault(module, set()).add(target)
            if _part(target) != _part(module):
                parts.setdefault(_part(module), set()).add(_part(target))
    assert _cycles(parts) == []
    assert _cycles(modules) == []


def test_table_is_acyclic() -> None:
    assert _cycles({k: set(v) for k, v in ALLOWED.items()}) == []


def test_no_two_modules_share_a_name() -> None:
    """Outside cli/ (whose modules are named after their commands) and the `base.py` contract files of the plug-in
    families, a module name says which module it is; no module is named like a package."""
    names: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if path.name != "__init__.py" and _part(module) != "cli" and path.stem != "base":
            names.setdefault(path.stem, []).append(module)
    packages = {module.rpartition(".")[2] for module, path in MODULES.items() if path.name == "__init__.py"}
    assert {k: v for k, v in names.items() if len(v) > 1} == {}
    assert sorted(set(names) & packages) == []
