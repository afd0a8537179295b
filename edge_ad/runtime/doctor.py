"""`edge-ad doctor`: what this machine has for running edge-ad on the line, and how to install what is missing.

Every probe is isolated: a missing or broken library is reported (with an install hint for JetPack 6), never raised.
Only the standard library, importlib and subprocess (with timeouts) are used; nothing here needs a GPU.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

# L4T release -> JetPack (NVIDIA's JetPack archive); the first matching prefix wins
_L4T_TO_JETPACK = (
    ("38.2", "7.0"), ("36.4.4", "6.2.1"), ("36.4.3", "6.2"), ("36.4", "6.1"), ("36.3", "6.0"),
    ("36.2", "6.0 DP"), ("35.6", "5.1.4"), ("35.5", "5.1.3"), ("35.4", "5.1.2"), ("35.3", "5.1.1"), ("35.2", "5.1"),
    ("35.1", "5.0.2"), ("32.7", "4.6.x"),
)

HINTS = {
    "tensorrt": "sudo apt install python3-libnvinfer (part of nvidia-jetpack); create the venv with "
                "--system-site-packages to see it. x86 server: pip install 'edge-ad[cuda]'",
    "cuda-python": "JetPack 6: pip install 'edge-ad[jetson]' (cuda-python 12.6 = JetPack 6's CUDA); x86 server: "
                   "pip install 'edge-ad[cuda]'",
    "cuda": "sudo apt install nvidia-jetpack (CUDA, cuDNN, TensorRT); desktop: install the NVIDIA driver + CUDA",
    "onnxruntime": "pip install 'edge-ad[cpu]' (or [jetson] / [cuda], see 'extra' above); for ONNX Runtime on the "
                   "Jetson GPU (optional: the TensorRT backend is faster): pip uninstall onnxruntime, then pip install "
                   "onnxruntime-gpu --extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126",
    "opencv": "pip install opencv-python-headless",
    "openvino": "x86 line PC: pip install 'edge-ad[openvino]' (1.2x ONNX Runtime in f32, 2-3x in bf16/int8; "
                "backend auto picks it)",
    "aravis": "sudo apt install gir1.2-aravis-0.8 python3-gi (venv: --system-site-packages)",
    "harvesters": "pip install harvesters (needs a GenTL producer .cti from the camera vendor)",
    "genicam": "pip install genicam",
    "pypylon": "pip install pypylon (Basler cameras)",
    "asyncua": "pip install asyncua (OPC UA)",
    "pymodbus": "pip install pymodbus (Modbus TCP)",
    "snap7": "pip install python-snap7 (Siemens S7)",
    "jetpack": "sudo apt install nvidia-jetpack",
}


@dataclass
class Check:
    """One line of the report: `status` is "ok", "missing", "warn" or "info"."""

    group: str
    name: str
    status: str
    detail: str = ""
    hint: str = ""


@dataclass
class Report:
    """All checks plus a few facts that decide defaults (is this a Jetson, which TensorRT)."""

    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, group: str, name: str, status: str, detail: str = "", hint: str = "") -> None:
        self.checks.append(Check(group, name, status, detail, hint))

    def to_dict(self) -> dict[str, Any]:
        return {"facts": self.facts, "checks": [asdict(c) for c in self.checks]}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of `cmd`, or None when it is absent, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def parse_l4t(text: str) -> str | None:
    """L4T version from /etc/nv_tegra_release, e.g. "# R36 (release), REVISION: 4.3, ..." -> "36.4.3"."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_for_l4t(l4t: str) -> str | None:
    """JetPack release of an L4T version ("36.4.3" -> "6.2"), None when unknown."""
    for prefix, jp in _L4T_TO_JETPACK:
        if l4t == prefix or l4t.startswith(prefix + "."):
            return jp
    return None


def _check_platform(r: Report) -> None:
    r.add("system", "python", "ok", f"{platform.python_version()} ({sys.executable})")
    r.add("system", "platform", "info", f"{platform.platform()} {platform.machine()}")
    model = DEVICE_TREE_MODEL.read_bytes().rstrip(b"\0").decode(errors="replace") if DEVICE_TREE_MODEL.is_file() else ""
    release = NV_TEGRA_RELEASE.read_text(errors="replace") if NV_TEGRA_RELEASE.is_file() else ""
    l4t = parse_l4t(release) if release else None
    jetson = bool(release) or "jetson" in model.lower() or "orin" in model.lower()
    r.facts["jetson"] = jetson
    r.facts["board"] = model or None
    if not jetson:
        r.add("system", "jetson", "info", "not a Jetson" + (f" ({model})" if model else ""))
        return
    r.facts["l4t"] = l4t
    jp_pkg = _run(["dpkg-query", "-W", "-f", "${Version}", "nvidia-jetpack"])
    jp = jp_pkg or (jetpack_for_l4t(l4t) if l4t else None)
    r.facts["jetpack"] = jp
    r.add("system", "jetson", "ok", model or "Jetson (model unknown)")
    r.add(
        "system",
        "L4T / JetPack",
        "ok" if jp else "warn",
        f"L4T {l4t or '?'}, JetPack {jp or 'unknown'}"
        + ("" if jp_pkg else " (nvidia-jetpack apt package not installed)"),
        "" if jp_pkg else HINTS["jetpack"],
    )
    if l4t and not l4t.startswith("36."):
        r.add(
            "system", "JetPack version", "warn", f"edge-ad targets JetPack 6 (L4T 36.x, TensorRT 10.3); found L4T {l4t}"
        )


def _cudart_ctypes() -> tuple[int, int, int] | None:
    """(runtime version, driver version, device count) via libcudart when cuda-python is absent."""
    for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        rt, drv, count = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        lib.cudaRuntimeGetVersion(ctypes.byref(rt))
        lib.cudaDriverGetVersion(ctypes.byref(drv))
        if lib.cudaGetDeviceCount(ctypes.byref(count)) != 0:
            count.value = 0
        return rt.value, drv.value, count.value
    return None


def _cuda_ver(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def _check_cuda(r: Report) -> None:
    from edge_ad.runtime.trt.cuda_mem import CudaError, CudaMissingError, get_cuda

    lib = _version("cuda-python") or _version("cuda-bindings")
    try:
        api = get_cuda()
    except CudaMissingError:
        api = None
    if api is None:
        r.add("cuda", "cuda-python", "missing", "", HINTS["cuda-python"])
        found = _cudart_ctypes()
        if found is None:
            r.add("cuda", "CUDA runtime", "missing", "libcudart not found", HINTS["cuda"])
        else:
            rt, drv, count = found
            r.add("cuda", "CUDA runtime", "ok" if count else "warn",
                  f"runtime {_cuda_ver(rt)}, driver {_cuda_ver(drv)}, {count} device(s) (libcudart via ctypes)")
    else:
        r.add("cuda", api.library, "ok", lib or "")
        try:
            count = api.device_count()
            infos = [api.device_info(i) for i in range(count)]
        except CudaError as e:
            count, infos = 0, []
            r.add("cuda", "GPU", "missing", str(e), HINTS["cuda"])
        if count == 0 and not infos:
            r.add("cuda", "GPU", "missing", "no CUDA device visible (driver missing or no GPU)", HINTS["cuda"])
        for info in infos:
            kind = "integrated, zero-copy capable" if info.integrated and info.can_map_host_memory else "discrete"
            r.add("cuda", f"GPU {info.index}", "ok",
                  f"{info.name}, compute capability {info.sm}, {info.total_memory / 2**30:.1f} GiB, {kind}")
        r.facts["gpus"] = [asdict(i) for i in infos]
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    if smi:
        r.add("cuda", "nvidia-smi", "info", smi.replace("\n", "; "))


def tensorrt_for_device(jetson: bool, board: str | None, jetpack: str | None) -> str:
    """The TensorRT this device runs (the matrix in trt/support.py), in words."""
    if not jetson:
        return "TensorRT 10.x from edge-ad[cuda] (tensorrt-cu12 < 11); 11.x where an NVIDIA container ships it"
    major = (jetpack or "").split(".")[0]
    name = (board or "").lower()
    if major == "7":
        if "agx orin" in name or "thor" in name:
            return "TensorRT 11.4.1 from JetPack 7.2.2+ (strongly typed only, no DLA path)"
        return ("JetPack 7 supports AGX Orin and Thor only: Orin Nano/NX stay on JetPack 6 with TensorRT 10.3 "
                "(TensorRT 11.5 has no Jetson support)")
    return "TensorRT 10.3 from JetPack 6 (sudo apt install python3-libnvinfer; edge-ad[jetson])"


def _dla_cores(trt: Any) -> int | None:
    """DLA cores TensorRT sees (None when a builder cannot be made here, e.g. no GPU)."""
    try:
        from edge_ad.runtime.trt.build import dla_core_count

        return dla_core_count(trt)
    except Exception:
        return None


def _check_tensorrt(r: Report) -> None:
    from edge_ad.runtime.trt import TensorRTMissingError, load_tensorrt, tensorrt_major
    from edge_ad.runtime.trt.support import dla_support

    expected = tensorrt_for_device(bool(r.facts.get("jetson")), r.facts.get("board"), r.facts.get("jetpack"))
    r.add("inference", "tensorrt for this device", "info", expected)
    try:
        trt = load_tensorrt()
    except TensorRTMissingError:
        r.facts["tensorrt"] = None
        r.add("inference", "tensorrt", "missing", "", HINTS["tensorrt"])
        return
    version = str(trt.__version__)
    r.facts["tensorrt"] = version
    major = tensorrt_major(trt)
    note = "strong typing only (fp16 via the fp16 graph, int8 via Q/DQ)" if major >= 11 else \
        "strongly typed builds + weak-typing --fp16-fallback"
    jp6 = bool(r.facts.get("jetson")) and (r.facts.get("jetpack") or "6").startswith("6")
    if jp6 and major != 10:
        r.add("inference", "tensorrt", "warn", f"{version} on JetPack 6, which ships TensorRT 10.3: a pip "
              "tensorrt is shadowing JetPack's", "pip uninstall tensorrt; use JetPack's python3-libnvinfer")
    else:
        r.add("inference", "tensorrt", "ok", f"{version}: {note}")
    cores = _dla_cores(trt)
    r.facts["dla_cores"] = cores
    if cores is None:
        r.add("inference", "DLA", "info", "unknown (no TensorRT builder here: no GPU?)")
    else:
        usable, why = dla_support(version, cores)
        r.add("inference", "DLA", "ok" if usable else "info", why)


def _check_onnxruntime(r: Report) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        r.add("inference", "onnxruntime", "missing", "", HINTS["onnxruntime"])
        return
    providers = list(ort.get_available_providers())
    r.facts["onnxruntime_providers"] = providers
    gpu = any(p in providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    r.add("inference", "onnxruntime", "ok" if gpu or not r.facts.get("jetson") else "warn",
          f"{ort.__version__}, providers: {', '.join(providers)}",
          "" if gpu else HINTS["onnxruntime"])


def _check_openvino(r: Report) -> None:
    """OpenVINO: version, devices and whether the CPU runs bf16 natively (bf16 packages need it to be fast)."""
    try:
        import openvino as ov
    except ImportError:
        r.facts["openvino"] = None
        x86 = platform.machine() in ("x86_64", "AMD64")
        r.add(
            "inference",
            "openvino",
            "missing" if x86 else "info",
            "" if x86 else "x86 only",
            HINTS["openvino"] if x86 else "",
        )
        return
    from edge_ad.runtime.backends.openvino import cpu_has_bf16

    core = ov.Core()
    bf16 = cpu_has_bf16(core)
    r.facts["openvino"] = {"version": ov.__version__, "devices": list(core.available_devices), "cpu_bf16": bf16}
    r.add("inference", "openvino", "ok", f"{ov.__version__}, devices: {', '.join(core.available_devices)}, CPU bf16: "
          f"{'yes' if bf16 else 'no'}")


def recommend_extra(jetson: bool, jetpack: str | None, machine: str, nvidia_gpu: bool) -> tuple[str, str]:
    """(extra, how to install it) for this machine: `jetson` on JetPack 6, `cuda` on x86-64 with an NVIDIA GPU,
    else `cpu`."""
    if jetson:
        major = (jetpack or "").split(".")[0]
        if major and major != "6":
            note = f" (this is JetPack {jetpack}; edge-ad's Jetson extra targets JetPack 6 with TensorRT 10.3)"
        else:
            note = ""
        return "jetson", ("sudo apt install python3-libnvinfer; python3 -m venv --system-site-packages .venv; "
                          f".venv/bin/pip install 'edge-ad[jetson]'{note}")
    if nvidia_gpu and machine in ("x86_64", "AMD64"):
        return "cuda", "pip install 'edge-ad[cuda]' (TensorRT, cuda-python 12, onnxruntime-gpu; needs a CUDA 12 driver)"
    return "cpu", "pip install 'edge-ad[cpu]'"


def _check_extra(r: Report) -> None:
    """Which extra fits this machine, and whether two ONNX Runtimes were installed side by side."""
    nvidia = bool(_run(["nvidia-smi", "-L"])) or any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvgpu"))
    extra, how = recommend_extra(bool(r.facts.get("jetson")), r.facts.get("jetpack"), platform.machine(), nvidia)
    r.facts["recommended_extra"] = extra
    r.add("system", "extra", "info", f"edge-ad[{extra}] fits this machine", how)
    runtimes = [d for d in ("onnxruntime", "onnxruntime-gpu") if _version(d)]
    if len(runtimes) > 1:
        r.add("system", "onnxruntime install", "warn", f"both {' and '.join(runtimes)} are installed: they share one "
              "`onnxruntime` module and overwrite each other's files",
              f"pip uninstall -y {' '.join(runtimes)} && pip install 'edge-ad[{extra}]'")


def _check_module(r: Report, group: str, name: str, module: str, dist: str | None, hint: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        r.add(group, name, "missing", "", hint)
        return
    version = (_version(dist) if dist else None) or str(getattr(mod, "__version__", ""))
    r.add(group, name, "ok", version)


def _check_aravis(r: Report) -> None:
    try:
        gi = importlib.import_module("gi")
        gi.require_version("Aravis", "0.8")
        aravis = importlib.import_module("gi.repository.Aravis")
    except (ImportError, ValueError) as e:
        r.add("camera", "aravis (gi)", "missing", str(e) if "gi" in sys.modules else "", HINTS["aravis"])
        return
    pkg = _run(["dpkg-query", "-W", "-f", "${Version}", "gir1.2-aravis-0.8"])
    r.add("camera", "aravis (gi)", "ok", f"Aravis {getattr(aravis, '_version', '0.8')} typelib" +
          (f", package {pkg}" if pkg else ""))


def _checks() -> list[tuple[str, str, Callable[[Report], None]]]:
    """(group, name, probe) in report order; a probe that raises becomes one "warn" line of its group."""
    def module(group: str, name: str, mod: str, dist: str | None, hint_key: str) -> Callable[[Report], None]:
        return lambda r: _check_module(r, group, name, mod, dist, HINTS[hint_key])

    return [
        ("system", "platform", _check_platform),
        ("system", "extra", _check_extra),
        ("cuda", "cuda", _check_cuda),
        ("inference", "tensorrt", _check_tensorrt),
        ("inference", "onnxruntime", _check_onnxruntime),
        ("inference", "openvino", _check_openvino),
        ("inference", "opencv", module("inference", "opencv", "cv2", None, "opencv")),
        ("camera", "aravis (gi)", _check_aravis),
        ("camera", "harvesters", module("camera", "harvesters", "harvesters", "harvesters", "harvesters")),
        ("camera", "genicam", module("camera", "genicam", "genicam", "genicam", "genicam")),
        ("camera", "pypylon", module("camera", "pypylon", "pypylon", "pypylon", "pypylon")),
        ("plc", "asyncua (OPC UA)", module("plc", "asyncua (OPC UA)", "asyncua", "asyncua", "asyncua")),
        ("plc", "pymodbus (Modbus)", module("plc", "pymodbus (Modbus)", "pymodbus", "pymodbus", "pymodbus")),
        ("plc", "snap7 (Siemens S7)", module("plc", "snap7 (Siemens S7)", "snap7", "python-snap7", "snap7")),
    ]


def run_doctor() -> Report:
    """Probe everything; never raises for a missing or broken component."""
    r = Report()
    for group, name, probe in _checks():
        try:
            probe(r)
        except Exception as e:
            r.add(group, name, "warn", f"probe failed: {type(e).__name__}: {e}")
    return r


def format_report(report: Report) -> str:
    """Aligned text table, grouped, with the install hint under each missing/warn line."""
    marks = {"ok": "ok", "missing": "MISSING", "warn": "WARN", "info": "-"}
    width = max((len(c.name) for c in report.checks), default=10)
    order = list(dict.fromkeys(c.group for c in report.checks))
    lines: list[str] = []
    group = None
    for c in sorted(report.checks, key=lambda c: order.index(c.group)):
        if c.group != group:
            group = c.group
            lines.append(f"[{group}]")
        lines.append(f"  {c.name:<{width}}  {marks.get(c.status, c.status):<7}  {c.detail}".rstrip())
        if c.hint and c.status != "ok":
            lines.append(f"  {'':<{width}}  {'':<7}  -> {c.hint}")
    return "\n".join(lines)
