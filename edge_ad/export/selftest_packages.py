"""The packages `edge-ad selftest` builds engines from: untrained tiny models exported in fp32, fp16 and int8.

They test the device path (parse, build, run, agree with ONNX Runtime, speed), not accuracy: the weights are random,
the fp16/int8 conversions calibrate on a small synthetic dataset and their accuracy gate is opened (budget 1.0,
agreement 0.0), and every manifest says so in `model.untrained` and in the gate report. Lab side (needs torch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edge_ad.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MODELS = ("dinomaly-tiny",)
DATA_DIR = "selftest-data"


def tiny_models() -> list[str]:
    """Every registered `-tiny` variant (one per model family)."""
    from edge_ad.models.registry import list_models

    return [m for m in list_models() if m.endswith("-tiny")]


def prepare_packages(out: str | Path, models: Sequence[str] = DEFAULT_MODELS,
                     precisions: Sequence[str] = PRECISIONS, progress: bool = True) -> list[Path]:
    """Write `<out>/<model>-<precision>` packages (and the synthetic images they were converted with) and return
    their paths. Existing packages of the same name are replaced."""
    from edge_ad.data.synth import generate
    from edge_ad.export.exporter import export_package
    from edge_ad.export.precision import convert_package

    bad = sorted(set(precisions) - set(PRECISIONS))
    if bad:
        raise ConfigError(f"precisions: expected a subset of {list(PRECISIONS)}, got {bad}")
    known = tiny_models()
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ConfigError(f"models: {unknown} are not tiny variants; self-test packages come from {known}")
    root = Path(out)
    data = root / DATA_DIR
    if not (data / "pcb").is_dir():
        generate(data, categories=["pcb", "fabric"], per_category=6, size=96, seed=3)
    paths: list[Path] = []
    for name in models:
        fp32, _ = export_package(model_name=name, out=root / f"{name}-fp32", data=str(data), force=True)
        if "fp32" in precisions:
            paths.append(fp32)
        for prec in (p for p in precisions if p != "fp32"):
            log.info("self-test package %s %s (untrained, gate opened: engine tests only)", name, prec)
            pkg, _ = convert_package(fp32, prec, root / f"{name}-{prec}", data=data, max_drop=1.0, min_agreement=0.0,
                                     force=True, progress=progress,
                                     scales_out=root / f"{name}.int8-scales.json" if prec == "int8" else None)
            paths.append(pkg)
    return paths
