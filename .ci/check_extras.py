"""CI: the device extras resolve for the machines they are for, without installing anything.

- `jetson`: linux aarch64 (JetPack 6 = Ubuntu 22.04, glibc 2.35) with Python 3.10, binary wheels only;
- `cuda`:   linux x86-64 with Python 3.10, binary wheels only, except TensorRT itself, whose PyPI entries
            (tensorrt-cu12, -libs, -bindings) are placeholders that fetch the real wheel from pypi.nvidia.com while
            their metadata is built: it is checked against the versions PyPI lists instead.
Also: no extra installs onnxruntime next to onnxruntime-gpu. Usage: python .ci/check_extras.py [PYTHON]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

ROOT = Path(__file__).resolve().parents[1]
PY = sys.argv[1] if len(sys.argv) > 1 else sys.executable
AARCH64 = [f"manylinux_2_{n}_aarch64" for n in (17, 27, 28, 31, 34, 35)] + ["manylinux2014_aarch64"]
X86 = [f"manylinux_2_{n}_x86_64" for n in (17, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]


def pip(*args: str) -> str:
    proc = subprocess.run([PY, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def extra_requirements(wheel: Path, extra: str) -> list[str]:
    with ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    out = []
    for req in msg.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", marker):
            out.append(spec.strip())
    return out


def dry_run(reqs: list[str], platforms: list[str]) -> list[str]:
    args = ["install", "--dry-run", "--ignore-installed", "--no-cache-dir", "--only-binary=:all:",
            "--python-version", "3.10", "--implementation", "cp", "--target", "/nonexistent"]
    for p in platforms:
        args += ["--platform", p]
    out = pip(*args, *reqs)
    line = next((ln for ln in out.splitlines() if ln.startswith("Would install")), "")
    return line.removeprefix("Would install ").split()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, str(ROOT))
        wheel = next(Path(tmp).glob("edge_ad-*.whl"))
        base = [f"{wheel}"]
        jetson_reqs = extra_requirements(wheel, "jetson")
        jetson = dry_run(base + jetson_reqs, AARCH64)
        cuda_reqs = extra_requirements(wheel, "cuda")
        trt = [r for r in cuda_reqs if r.startswith("tensorrt")]
        cuda = dry_run(base + [r for r in cuda_reqs if not r.startswith("tensorrt")], X86)
    for name, got in (("jetson", jetson), ("cuda", cuda)):
        names = {re.split(r"-\d", p, maxsplit=1)[0].lower().replace("_", "-") for p in got}
        print(f"[{name}] resolves: {' '.join(got)}")
        if {"onnxruntime", "onnxruntime-gpu"} <= names:
            sys.exit(f"[{name}] would install both onnxruntime and onnxruntime-gpu")
        if name == "jetson" and names & {"tensorrt", "onnxruntime-gpu"}:
            sys.exit("[jetson] must not pip-install tensorrt or onnxruntime-gpu (TensorRT comes from JetPack)")
    if not any(r.replace(" ", "").startswith("numpy") and "<2" in r.replace(" ", "") for r in jetson_reqs):
        sys.exit(f"[jetson] must pin numpy<2 (JetPack 6's TensorRT 10.3 bindings are built against NumPy 1.x): "
                 f"{jetson_reqs}")
    if not trt or not all(re.search(r"<\s*\d", r) for r in trt):
        sys.exit(f"[cuda] the TensorRT requirement needs an upper bound (a deliberate range), got {trt}")
    for req in trt:
        dist = re.match(r"([A-Za-z0-9_.-]+)", req).group(1)
        listed = pip("index", "versions", dist)
        versions = re.search(r"Available versions: (.*)", listed)
        if not versions:
            sys.exit(f"[cuda] {dist}: PyPI lists no versions")
        print(f"[cuda] {req}: PyPI lists {versions.group(1).split(', ')[0]} (newest) ... (fetched from "
              "pypi.nvidia.com at install time)")


if __name__ == "__main__":
    main()
