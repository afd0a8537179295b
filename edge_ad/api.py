"""The lab side in three calls, for notebooks and scripts (the same code as `edge-ad train|eval|export`):

    import edge_ad
    run = edge_ad.fit("dinomaly-s", data="/data/mvtec", iters=10000)   # -> Run
    report = run.evaluate()                                             # -> EvalReport (7 metrics per category)
    pkg = run.export(precision="int8")                                  # -> ExportResult (gated against fp32)
    det = pkg.detector()                                                # the line-side Detector of the package

Each returns a small typed object (paths, the numbers, the full JSON-safe report in `.raw`). Needs the lab side
(`pip install "edge-ad[train]"`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError


@dataclass(frozen=True)
class Run:
    """A training run directory (what `edge-ad train` writes)."""

    path: Path
    model: str
    categories: list[str]
    encoder_weights: str
    thresholds: dict[str, Any] | None = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Read a run directory back (ConfigError if it is not one)."""
        from edge_ad.evaluate import rundir
        from edge_ad.fileio import read_json_file

        p = Path(path)
        cfg = rundir.read_config(p)
        info = read_json_file(p / rundir.RUN_INFO, "run info") if (p / rundir.RUN_INFO).is_file() else {}
        thr = read_json_file(p / rundir.THRESHOLDS, "thresholds") if (p / rundir.THRESHOLDS).is_file() else None
        return cls(p, str(cfg["model"]), list(info.get("categories") or cfg.get("categories") or []),
                   str(info.get("encoder_weights", "unknown")), thr)

    def evaluate(self, **kwargs: Any) -> EvalReport:
        return evaluate(self, **kwargs)

    def export(self, precision: str = "fp32", **kwargs: Any) -> ExportResult:
        return export(self, precision=precision, **kwargs)


@dataclass(frozen=True)
class EvalReport:
    """Seven metrics per category (and their mean) on the test split; `raw` is the full report (metrics.json)."""

    run: Path
    mean: dict[str, float]
    categories: dict[str, dict[str, float]]
    raw: dict[str, Any] = field(repr=False)

    def table(self) -> str:
        """The metrics as a Markdown table (percent)."""
        from edge_ad.evaluate.report import format_table

        keys = ["image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"]
        rows = [[c] + [f"{100 * m[k]:.1f}" for k in keys] for c, m in self.categories.items()]
        rows.append(["mean"] + [f"{100 * self.mean[k]:.1f}" for k in keys])
        return format_table(rows, ["category", "I-AUROC", "I-AP", "I-F1", "P-AUROC", "P-AP", "P-F1", "AUPRO"])


@dataclass(frozen=True)
class ExportResult:
    """A written model package: its path and precision, the parity with PyTorch (fp32) or the gate (fp16/int8)."""

    package: Path
    precision: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def parity(self) -> dict[str, Any] | None:
        return self.raw.get("parity")

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.raw.get("gate")

    def detector(self, backend: str = "auto", **kwargs: Any) -> Any:
        """The line-side `Detector` of this package."""
        from edge_ad.runtime import Detector

        return Detector.load(self.package, backend=backend, **kwargs)


def _run_path(run: Run | str | Path) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def fit(model: str, data: str | Path, out: str | Path | None = None, *, config: str | Path | None = None,
        resume: bool = False, progress: bool = True, **options: Any) -> Run:
    """Train `model` on the good images under `data` (the paper's training configuration, overridden by `config`
    YAML and `options`: any field of `edge_ad.train.options.TrainOptions`); returns the Run."""
    from edge_ad.train import fit as _fit

    return Run.open(_fit(model, data, out, config=config, resume=resume, progress=progress, **options))


def evaluate(run: Run | str | Path, *, data: str | Path | None = None, out_dir: str | Path | None = None,
             progress: bool = True, **kwargs: Any) -> EvalReport:
    """Evaluate a run on its test split (or `data`); writes metrics.json/.md and overlays into `out_dir`.
    `protocol="official"` (a keyword of `evaluate_run`) gives the model family's official evaluation."""
    from edge_ad.evaluate.runner import evaluate_run

    path = _run_path(run)
    report = evaluate_run(path, data=data, out_dir=out_dir, progress=progress, **kwargs)
    return EvalReport(path, dict(report["mean"]), {c: dict(m) for c, m in report["categories"].items()}, report)


def export(run: Run | str | Path | None = None, *, model: str | None = None, precision: str = "fp32",
           out: str | Path | None = None, data: str | Path | None = None, force: bool = False,
           **convert_options: Any) -> ExportResult:
    """Export a run (or an untrained `model`, for speed tests) to a package; fp16/int8 are converted from a
    temporary fp32 package and written only if they pass the accuracy gate (`convert_options`: max_drop,
    min_agreement, method, exclude, calib, ...)."""
    from edge_ad.export.exporter import export_package

    if precision not in ("fp32", "fp16", "bf16", "int8"):
        raise ConfigError(f"precision: expected fp32, fp16, bf16 or int8, got {precision!r}")
    if (run is None) == (model is None):
        raise ConfigError("export: give a run (trained) or model= (untrained), not both and not neither")
    run_s = str(_run_path(run)) if run is not None else None
    if precision == "fp32":
        pkg, summary = export_package(model_name=model, run=run_s, out=out, data=str(data) if data else None,
                                      force=force)
        return ExportResult(pkg, "fp32", summary)
    from edge_ad.export.precision import convert_package
    from edge_ad.runtime.package import load_package

    with tempfile.TemporaryDirectory(prefix="edge-ad-fp32-") as tmp:
        fp32, _ = export_package(model_name=model, run=run_s, out=Path(tmp) / "fp32",
                                 data=str(data) if data else None)
        name = load_package(fp32).name
        target = Path(out) if out else Path("packages") / f"{name}-{precision}"
        pkg, report = convert_package(fp32, precision, target, data=data, force=force, **convert_options)
    return ExportResult(pkg, precision, report)
