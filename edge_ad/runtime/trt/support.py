"""Which TensorRT runs where, and what DLA it offers: the facts `edge-ad doctor`, `edge-ad build --dla` and the README
state (no tensorrt import here).

TensorRT by device (NVIDIA's release notes and JetPack 6/7 support tables):
- Jetson Orin Nano / Orin NX / AGX Orin on JetPack 6.x (L4T 36): TensorRT 10.3 from the OS (edge-ad[jetson]);
  DLA cores on Orin NX and AGX Orin (none on Orin Nano).
- AGX Orin and Thor on JetPack 7.2.2+: TensorRT 11.4.1; Orin Nano/NX stay on JetPack 6 and TensorRT 10.3.
- x86-64 with a CUDA 12 driver: TensorRT 10.x from PyPI (edge-ad[cuda], tensorrt-cu12 < 11), or 11.x where a
  container ships it; TensorRT 11.5 has no Jetson support.
"""

from __future__ import annotations

from edge_ad.errors import ConfigError

#: (device, JetPack / platform, TensorRT, DLA, install): the matrix README and doctor show
TENSORRT_MATRIX: tuple[tuple[str, str, str, str, str], ...] = (
    ("Orin Nano", "JetPack 6.x (L4T 36)", "10.3", "none on the module", "edge-ad[jetson]"),
    ("Orin NX, AGX Orin", "JetPack 6.x (L4T 36)", "10.3", "fp16, weakly typed, GPU fallback", "edge-ad[jetson]"),
    ("AGX Orin, Thor", "JetPack 7.2.2+", "11.4.1", "not used (strongly typed only)", "TensorRT from JetPack"),
    ("x86-64 + NVIDIA GPU", "CUDA 12 driver", "10.x (11.x in containers)", "none", "edge-ad[cuda]"),
)


def _major_minor_patch(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def dla_support(tensorrt_version: str, dla_cores: int) -> tuple[bool, str]:
    """(usable, why) for DLA engines with this TensorRT and this device's `dla_cores`."""
    version = _major_minor_patch(tensorrt_version)
    if version[0] >= 11:
        if version < (11, 4, 1):
            return False, (f"TensorRT {tensorrt_version} has no DLA (11.0-11.4.0 ship none); build for the GPU "
                           "(no --dla), or use JetPack 6's TensorRT 10.3 for DLA")
        return False, (f"TensorRT {tensorrt_version} builds strongly typed networks only, and DLA with strong typing "
                       "is not a documented TensorRT path; build for the GPU (no --dla)")
    if dla_cores <= 0:
        return False, "this device has no DLA core (Orin Nano, discrete GPUs); build for the GPU (no --dla)"
    return True, (f"{dla_cores} DLA core(s): fp16 engines only, built weakly typed from the fp32 graph with GPU "
                  "fallback (matrix multiplies between activations, LayerNorm and softmax of transformer models run "
                  "on the GPU)")


def check_dla(precision: str, tensorrt_version: str, dla_cores: int, dla_core: int) -> None:
    """ConfigError naming the alternative unless an engine of `precision` can be built for DLA core `dla_core`."""
    ok, why = dla_support(tensorrt_version, dla_cores)
    if not ok:
        raise ConfigError(f"dla_core: {why}")
    if not 0 <= dla_core < dla_cores:
        raise ConfigError(f"dla_core: {dla_core} is not available on this device, which has cores 0..{dla_cores - 1}")
    if precision != "fp16":
        raise ConfigError(f"dla_core: DLA engines are fp16 (TensorRT 10.3 documents DLA for weakly typed networks; "
                          f"edge-ad's {precision} graph is built strongly typed): use --precision fp16 with --dla, or "
                          f"build the {precision} engine for the GPU (no --dla)")
