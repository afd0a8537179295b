"""The container recipes build without a GPU runtime (issue 25): no RUN step imports TensorRT, pycuda or
cuda-python (JetPack's TensorRT needs libraries that only `docker run --runtime nvidia` mounts), and every path
they COPY exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest))
    return out


def test_there_are_dockerfiles() -> None:
    assert {p.name for p in DOCKERFILES} >= {"jetson.Dockerfile", "x86.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_build_step_needs_a_gpu_runtime(path: Path) -> None:
    gpu_only = re.compile(r"\bimport\s+(tensorrt|pycuda|cuda)\b|from\s+(tensorrt|pycuda|cuda)\b|\bnvidia-smi\b|"
                          r"\bedge-ad\s+(doctor|selftest|build|verify)\b")
    bad = [args for kind, args in _instructions(path) if kind == "RUN" and gpu_only.search(args)]
    assert bad == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists(path: Path) -> None:
    for kind, args in _instructions(path):
        if kind == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src}: not in the repository"
