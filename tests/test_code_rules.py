"""Rules of the code base that keep the roots of old bugs from coming back (each was a real defect once)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "edge_ad").rglob("*.py"))
TESTS = sorted((ROOT / "tests").rglob("*.py"))


def _grep(files: list[Path], pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if rx.search(line) and not line.lstrip().startswith("#")]


def _definitions(kind: type, name: str) -> list[str]:
    out = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, kind) and getattr(node, "name", None) == name:
                out.append(str(p.relative_to(ROOT)))
    return out


def test_no_process_global_log_muting() -> None:
    """logging.disable() also mutes pipeline and PLC warnings: components say what they need with a flag."""
    assert _grep(SOURCES, r"logging\.disable\(") == []


def test_no_private_torch_apis() -> None:
    assert _grep(SOURCES, r"torch\._utils|torch\._C\.") == []


def test_error_classes_live_in_errors_py() -> None:
    stray = []
    for p in SOURCES:
        if p.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and (
                    node.name.endswith(("Error", "Exception")) or node.name == "ConnectionLost"):
                stray.append(f"{p.relative_to(ROOT)}:{node.name}")
    assert stray == []


def test_one_definition_each() -> None:
    for name in ("normalize_score", "sha256_file", "spearman", "read_image", "huge_png"):
        assert len(_definitions(ast.FunctionDef, name)) <= 1, name
    assert _definitions(ast.FunctionDef, "load_backbone_weights") == []  # one name: load_encoder_weights
    assert _grep(SOURCES, r"\bMAX_TOPK\b") == []  # one constant: trt_ops.TOPK_MAX_K
    named = [x.split(":")[0] for x in _grep(SOURCES, r"^\s*model\.name = name")]
    assert named == ["edge_ad/models/registry.py"]  # set once, by create_model


def test_plc_adapters_do_not_import_the_link() -> None:
    """transport.py holds what adapters share; link.py picks adapters from its scheme table (no import cycle)."""
    adapters = [ROOT / "edge_ad" / "plc" / f for f in ("modbus.py", "opcua.py", "s7.py", "opcua_security.py")]
    assert _grep(adapters, r"from edge_ad\.plc\.link import|import edge_ad\.plc\.link") == []
    link = (ROOT / "edge_ad" / "plc" / "link.py").read_text()
    assert "ExponentialBackoff" in link and "import" not in link.split("def open_adapter")[1].split("\n\n\n")[0]


def test_tests_do_not_import_each_other() -> None:
    """Shared helpers live in helper modules (plc_peers, runtime_fixtures) and fixtures in conftest.py."""
    assert _grep(TESTS, r"^\s*(from|import) test_") == []
