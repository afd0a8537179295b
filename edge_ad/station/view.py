"""What the HMI (or any other screen) reads from a running station and the engineer actions it may take, as a
protocol of plain data: `StationView.snapshot()` returns a `StationSnapshot` of numbers and strings, and the actions
take numbers, so the HMI can as well sit in another process behind a local socket. The PLC-triggered `Inspector`
and the free-running pipeline's `PipelineView` implement it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from edge_ad.errors import ConfigError

#: engineer-settable sensitivity: effective threshold = threshold / sensitivity
SENSITIVITY_RANGE = (0.0, 100.0)


def check_sensitivity(value: object) -> float:
    """`value` as a sensitivity in (0, 100], else ConfigError naming the value."""
    lo, hi = SENSITIVITY_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
        raise ConfigError(f"sensitivity: expected a number in ({lo:g}, {hi:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class StationSnapshot:
    """A station's state at one moment (JSON-safe through `to_dict()`)."""

    command: str  #: "serve" (PLC handshake) or "run" (free-running pipeline)
    running: bool
    recipe: int  #: the active product recipe
    recipes: dict[int, str]  #: recipe index -> package (path or name)
    model: str | None
    precision: str | None
    threshold: float | None  #: effective image threshold (after sensitivity)
    sensitivity: float | None
    plc_connected: bool
    plc_description: str
    record_errors: int = 0  #: recorder writes that failed
    late_discarded: int = 0
    triggers_ignored: int = 0
    source_fault: bool = False
    camera: dict[str, Any] = field(default_factory=dict)  #: the source's counters (frames, gaps, lost frames)
    roi_categories: list[str] = field(default_factory=list)  #: categories whose ROI can be changed (geometry)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recipes"] = {str(k): v for k, v in sorted(self.recipes.items())}
        return d


class StationView(Protocol):
    """Read a station, and the engineer actions on it (each takes effect from the next part on)."""

    def snapshot(self) -> StationSnapshot: ...

    def set_sensitivity(self, value: float) -> None: ...

    def request_recipe(self, index: int) -> None: ...

    def set_roi(self, category: str | None, mask_png: bytes) -> str: ...


def apply_roi(detector: object, category: str | None, mask_png: bytes) -> str:
    """A new ROI (a PNG in the reference frame: 255 inspect, 0 ignore, grey = weight) for the detector's geometry,
    used from the next part on; returns the category it applied to. ConfigError for a package without geometry, an
    unknown category or a mask of another size."""
    import cv2

    from edge_ad.imageio import decode_image

    geometry = getattr(detector, "geometry", None)
    if geometry is None:
        raise ConfigError("roi: the active package inspects whole images (no --roi/--align/--tile geometry)")
    cats = sorted(geometry.references)
    cat = category or (cats[0] if len(cats) == 1 else None)
    if cat is None:
        raise ConfigError(f"roi: the package has several categories {cats}: name one")
    img, _ = decode_image(mask_png, "ROI mask", max_pixels=64_000_000)
    geometry.set_roi(cat, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    return str(cat)
