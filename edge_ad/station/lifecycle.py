"""The model's life on a station: what a package is (for the station's model register) and the watch that rolls a
freshly promoted model back when its parts leave the configured band.

A promotion or rollback happens between two parts (the Inspector's recipe switch: the new detector is loaded and
verified before the switch, no frame is judged by a half-loaded model, the PLC's ModelId follows); after a
promotion `RollbackWatch` looks at the next `parts` verdicts and asks for a rollback as soon as the NG rate or the
fault rate (FAILED and LATE) is above its limit with at least `min_parts` seen, with the reason. Line side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_ad.errors import ConfigError
from edge_ad.station.record import InspectionRecord


def package_info(pkg: Any, path: str | None = None) -> dict[str, Any]:
    """A ModelPackage as the station's model register keeps it: digest, name, version (the manifest's `version`,
    else its export time), precision, dataset revision (the training data fingerprint), gate/parity metrics, the
    signing key id (None: unsigned or no trusted keys), and where it was loaded from."""
    man = pkg.manifest
    metrics = dict(man.get("export_metrics") or {})
    gate = metrics.get("gate")
    summary: dict[str, Any] = {"thresholds": {k: man["thresholds"]["image"].get(k) for k in ("target_frr", "n_good")}}
    if isinstance(gate, dict):
        summary["gate"] = {"passed": gate.get("passed"), "backend": gate.get("backend"), "overall": gate.get("overall")}
    for k in ("max_abs_map_diff", "score_spearman"):
        if k in metrics:
            summary[k] = metrics[k]
    training = man.get("training") or {}
    return {"digest": pkg.digest, "name": pkg.name, "version": str(man.get("version") or man.get("created") or ""),
            "precision": pkg.precision, "dataset_revision": training.get("data_fingerprint"), "metrics": summary,
            "signer": pkg.signer, "path": path or str(pkg.root)}


@dataclass(frozen=True)
class RollbackBand:
    """When a promoted model is rolled back automatically: within its first `parts` parts, once `min_parts` were
    seen, an NG rate above `max_ng_rate` or a fault rate (FAILED, LATE) above `max_fault_rate`."""

    parts: int = 50
    min_parts: int = 10
    max_ng_rate: float = 0.5
    max_fault_rate: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.min_parts <= self.parts:
            raise ConfigError(f"rollback: expected 1 <= min_parts <= parts, got {self.min_parts}, {self.parts}")
        for name in ("max_ng_rate", "max_fault_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"rollback: {name}: expected a number in [0, 1], got {v}")


@dataclass
class RollbackWatch:
    """The verdicts of a freshly promoted model against its band; `observe` returns why to roll back, or None."""

    band: RollbackBand
    recipe: int
    seen: int = 0
    ng: int = 0
    faults: int = 0
    done: bool = field(default=False)

    def observe(self, rec: InspectionRecord) -> str | None:
        if self.done or rec.model_id != self.recipe:
            return None
        self.seen += 1
        decision = rec.decision
        self.ng += decision != "OK"
        self.faults += decision in ("FAILED", "LATE")
        b = self.band
        if self.seen >= b.min_parts:
            if self.faults / self.seen > b.max_fault_rate:
                self.done = True
                return (f"fault rate {self.faults}/{self.seen} = {self.faults / self.seen:.0%} above "
                        f"{b.max_fault_rate:.0%} in the first {self.seen} parts")
            if self.ng / self.seen > b.max_ng_rate:
                self.done = True
                return f"NG rate {self.ng}/{self.seen} = {self.ng / self.seen:.0%} above {b.max_ng_rate:.0%} in " \
                       f"the first {self.seen} parts"
        if self.seen >= b.parts:
            self.done = True
        return None
