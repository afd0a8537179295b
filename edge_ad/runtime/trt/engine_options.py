"""TensorRT engine options as one value: what `edge-ad build` records as a device's default and what `Detector.load`,
run/serve/verify/bench and the station config pass down to the engine cache (no tensorrt import here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from edge_ad.errors import ConfigError

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EngineOptions:
    """Options that select (and build) an engine; None/False = not chosen, so a default recorded on this device by
    `edge-ad build` applies, else the package's precision, its geometry's batch and TensorRT's defaults."""

    precision: str | None = None  # which graph: fp32 | fp16 | int8 (default: the package's)
    batch: int | None = None  # engine batch of a dynamic-batch graph (default: 1, or the tiles of one frame)
    workspace_mb: int | None = None  # builder scratch memory limit, MiB
    dla_core: int | None = None  # build for this DLA core (fp16/int8, GPU fallback on)
    fp16_fallback: bool = False  # TensorRT 10: fp16 engine from the fp32 graph, weakly typed
    tf32: bool = False  # fp32 engines: allow TF32

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in ENGINE_PRECISIONS:
            raise ConfigError(f"precision: expected one of {list(ENGINE_PRECISIONS)}, got {self.precision!r}")
        for name, lo in (("batch", 1), ("workspace_mb", 1), ("dla_core", 0)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise ConfigError(f"{name}: expected an integer >= {lo}, got {v!r}")
        for name in ("fp16_fallback", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")

    def is_unset(self) -> bool:
        """True when nothing was chosen (a recorded device default may then apply)."""
        return self == EngineOptions()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (every field)."""
        return asdict(self)

    def kwargs(self) -> dict[str, Any]:
        """Only the chosen options, as keyword arguments of the TensorRT backend / ensure_engine."""
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EngineOptions:
        """Validated options from JSON/YAML; ConfigError naming `where` and the field on anything else."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of engine options, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown engine option(s) {unknown}; expected {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
