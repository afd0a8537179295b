"""Drift: is the line still what the model was trained on? The package carries reference distributions of its good
images (manifest `drift`: brightness, contrast and sharpness of the training images, the normalised score of the
held-out good images, for packages that align frames the ECC match score of the good images, the expected NG
rate); the station compares its last `window` parts with them.

Statistic: the two-sample Kolmogorov-Smirnov test per quantity (no binning to choose, any distribution), the
asymptotic p-value of Kolmogorov's distribution with Stephens' correction; and the window's NG count against the
expected false-reject rate (binomial upper tail). Levels: WARN at p < `warn_p` (default 1e-5), ALARM at p <
`alarm_p` (default 1e-9), on any quantity; OK otherwise. With 512 reference values and a 200-part window, WARN
needs a KS distance of about 0.2 (a shift of ~0.5 standard deviation of a normal quantity), ALARM about 0.26.
Image statistics are taken on the frame scaled to a long side of 256 px (grey): mean (brightness), standard
deviation (contrast), variance of the Laplacian (sharpness).

`DriftMonitor` is a station recorder: the scheduler hands over references, a worker thread computes (a full queue
skips the part, counted), `status()` / `level` are read by the PLC link (signal `Drift`), the HMI, `/metrics` and
the MQTT state. Line side: numpy and OpenCV only.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_STATS = ("brightness", "contrast", "sharpness")
LEVELS = ("OK", "WARN", "ALARM")
#: most reference values kept per quantity in a manifest (evenly spaced order statistics beyond that)
REFERENCE_MAX = 512
#: fewer reference values than this: the quantity is not tested (its p-values would say nothing)
REFERENCE_MIN = 20
STATS_SIDE = 256


def image_stats(image: np.ndarray) -> dict[str, float]:
    """Brightness, contrast and sharpness of a BGR or grey uint8/uint16 frame, on a copy scaled to long side 256."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] >= 3:
        grey = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3:
        grey = np.ascontiguousarray(img[..., 0])
    else:
        grey = img
    if grey.dtype == np.uint16:
        grey = (grey // 256).astype(np.uint8)
    h, w = grey.shape[:2]
    scale = STATS_SIDE / max(h, w)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32)
    return {"brightness": float(g.mean()), "contrast": float(g.std()),
            "sharpness": float(cv2.Laplacian(g, cv2.CV_32F).var())}


def reference_values(values: Sequence[float]) -> list[float]:
    """Sorted finite values, at most REFERENCE_MAX (evenly spaced order statistics), rounded for the manifest."""
    v = np.sort(np.asarray([x for x in values if math.isfinite(x)], np.float64))
    if v.size > REFERENCE_MAX:
        v = v[np.linspace(0, v.size - 1, REFERENCE_MAX).round().astype(int)]
    return [float(f"{x:.6g}") for x in v]


def build_reference(image_stats_rows: Sequence[Mapping[str, float]], scores: Sequence[float] | None,
                    expected_ng_rate: float, source: str,
                    alignment: Sequence[float] | None = None) -> dict[str, Any]:
    """The manifest's `drift` section from per-image statistics, normalised good scores and (packages that align
    frames) the alignment match scores of the good images."""
    ref: dict[str, Any] = {"version": 1, "source": source, "expected_ng_rate": float(expected_ng_rate),
                           "image": {k: reference_values([r[k] for r in image_stats_rows]) for k in IMAGE_STATS}}
    if scores is not None:
        ref["score"] = reference_values(scores)
    if alignment:
        ref["alignment"] = reference_values(alignment)
    return ref


def ks_test(reference: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """(KS distance, asymptotic two-sided p-value) of two samples."""
    a, b = np.sort(reference), np.sort(sample)
    both = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, both, "right") / a.size - np.searchsorted(b, both, "right") / b.size)))
    en = math.sqrt(a.size * b.size / (a.size + b.size))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:
        return d, 1.0
    k = np.arange(1, 101)
    p = float(2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2)))
    return d, min(1.0, max(0.0, p))


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    i = np.arange(k, n + 1)
    logs = (np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in i])
            + i * math.log(p) + (n - i) * math.log1p(-p))
    m = logs.max()
    return float(min(1.0, math.exp(m) * np.exp(logs - m).sum()))


@dataclass(frozen=True)
class DriftReference:
    """A package's reference distributions (manifest `drift`), checked on load."""

    image: dict[str, np.ndarray]
    score: np.ndarray | None
    expected_ng_rate: float
    source: str
    alignment: np.ndarray | None = None  #: ECC match scores of the good images (packages that align frames)

    @classmethod
    def from_manifest(cls, section: Any, where: str) -> DriftReference:
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: drift: expected a mapping, got {type(section).__name__}")

        def values(v: Any, name: str) -> np.ndarray:
            if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          and math.isfinite(x) for x in v):
                raise ConfigError(f"{where}: drift.{name}: expected a non-empty list of finite numbers")
            return np.asarray(v, np.float64)

        image = section.get("image")
        if not isinstance(image, Mapping) or set(image) != set(IMAGE_STATS):
            raise ConfigError(f"{where}: drift.image: expected {list(IMAGE_STATS)}, got "
                              f"{sorted(image) if isinstance(image, Mapping) else image!r}")
        rate = section.get("expected_ng_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"{where}: drift.expected_ng_rate: expected a number in [0, 1), got {rate!r}")
        score, alignment = section.get("score"), section.get("alignment")
        return cls({k: values(image[k], f"image.{k}") for k in IMAGE_STATS},
                   values(score, "score") if score is not None else None, float(rate), str(section.get("source", "")),
                   values(alignment, "alignment") if alignment is not None else None)


@dataclass(frozen=True)
class DriftSettings:
    """How the station judges drift: the window of recent parts, how often it is tested, the p-value levels and the
    NG rate the line expects (None: the package's expected false-reject rate)."""

    window: int = 200
    every: int = 25
    warn_p: float = 1e-5
    alarm_p: float = 1e-9
    ng_rate: float | None = None

    def __post_init__(self) -> None:
        if self.window < 20 or not 1 <= self.every <= self.window:
            raise ConfigError(f"drift: expected window >= 20 and 1 <= every <= window, got {self.window}, {self.every}")
        if not 0.0 < self.alarm_p <= self.warn_p < 1.0:
            raise ConfigError(f"drift: expected 0 < alarm_p <= warn_p < 1, got {self.alarm_p}, {self.warn_p}")
        if self.ng_rate is not None and not 0.0 <= self.ng_rate < 1.0:
            raise ConfigError(f"drift: ng_rate: expected a number in [0, 1), got {self.ng_rate}")


class DriftMonitor:
    """Compares the last parts with the active package's reference; a station `Recorder` (cheap to call).

    `references`: package digest -> DriftReference (the recipes' packages); a part judged by a package without one
    is not counted. A package change (recipe switch, hot swap) starts a new window."""

    def __init__(self, references: Mapping[str, DriftReference], settings: DriftSettings | None = None,
                 queue_size: int = 64) -> None:
        self.references = dict(references)
        self.settings = settings or DriftSettings()
        self._q: queue.Queue[tuple[np.ndarray | None, float, bool, str | None, float] | None] = queue.Queue(
            queue_size)
        self._lock = threading.Lock()
        self._digest: str | None = None
        n = self.settings.window
        self._values: dict[str, deque[float]] = {k: deque(maxlen=n) for k in (*IMAGE_STATS, "score", "alignment")}
        self._ng: deque[bool] = deque(maxlen=n)
        self._since_check = 0
        self._status: dict[str, Any] = {"level": "OK", "code": 0, "reasons": [], "n": 0, "tests": {},
                                        "reference": None}
        self.skipped = 0
        self.parts = 0
        self._thread: threading.Thread | None = None

    # ---- recorder ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-ad-drift", daemon=True)
            self._thread.start()

    def write(self, event: Any) -> None:
        """Hand one verdict to the worker (never blocks: a full queue skips the part, counted)."""
        rec, result = event.record, event.result
        score = float(result.normalized_score) if result is not None and result.error is None else math.nan
        placed = result.alignment if result is not None and result.alignment else {}
        align = float(placed.get("score", math.nan)) if isinstance(placed, dict) else math.nan
        item = (event.image if isinstance(event.image, np.ndarray) else None, score, not rec.ok,
                event.package.digest, align)
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.skipped += 1

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(10.0)
            self._thread = None

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every handed-over part is processed (tests, shutdown)."""
        from edge_ad.runtime.queues import wait_drained

        return wait_drained(self._q, timeout)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                self.observe(*item)
            except Exception:  # a bad frame must not stop the monitor
                log.exception("drift monitor: part skipped")
            finally:
                self._q.task_done()

    # ---- the statistics ----------------------------------------------------------------------------------------
    def observe(self, image: np.ndarray | None, score: float, ng: bool, digest: str | None,
                alignment: float = math.nan) -> None:
        """One part (worker thread, or directly in tests): its image statistics, normalised score, NG flag and
        alignment match score (NaN: not aligned, or not an aligning package)."""
        ref = self.references.get(digest or "")
        if ref is None:
            return
        stats = image_stats(image) if image is not None else None
        with self._lock:
            if digest != self._digest:
                self._digest = digest
                for d in self._values.values():
                    d.clear()
                self._ng.clear()
                self._since_check = 0
                self._status = {"level": "OK", "code": 0, "reasons": [], "n": 0, "tests": {},
                                "reference": ref.source}
            if stats is not None:
                for k in IMAGE_STATS:
                    self._values[k].append(stats[k])
            if math.isfinite(score):
                self._values["score"].append(score)
            if math.isfinite(alignment):
                self._values["alignment"].append(alignment)
            self._ng.append(ng)
            self.parts += 1
            self._since_check += 1
            if len(self._ng) >= self.settings.window and self._since_check >= self.settings.every:
                self._since_check = 0
                self._status = self._check(ref)
            else:
                self._status["n"] = len(self._ng)

    def _check(self, ref: DriftReference) -> dict[str, Any]:
        s = self.settings
        tests: dict[str, Any] = {}
        reasons: list[str] = []
        worst = 0
        pairs = [(k, ref.image[k]) for k in IMAGE_STATS] + [
            (k, v) for k, v in (("score", ref.score), ("alignment", ref.alignment)) if v is not None]
        for name, reference in pairs:
            sample = np.asarray(self._values[name], np.float64)
            if reference.size < REFERENCE_MIN or sample.size < s.window // 2:
                tests[name] = {"skipped": f"{reference.size} reference / {sample.size} recent values"}
                continue
            d, p = ks_test(reference, sample)
            level = 2 if p < s.alarm_p else 1 if p < s.warn_p else 0
            tests[name] = {"ks": round(d, 4), "p": p, "level": LEVELS[level],
                           "recent_median": float(np.median(sample)), "reference_median": float(np.median(reference))}
            if level:
                direction = "up" if np.median(sample) > np.median(reference) else "down"
                reasons.append(f"{name} {direction}: KS {d:.3f}, p {p:.1e} (last {sample.size} parts vs "
                               f"{reference.size} reference images)")
            worst = max(worst, level)
        expected = s.ng_rate if s.ng_rate is not None else ref.expected_ng_rate
        expected = max(expected, 1e-3)
        k, n = int(sum(self._ng)), len(self._ng)
        p_ng = binomial_upper_tail(k, n, expected)
        level = 2 if p_ng < s.alarm_p else 1 if p_ng < s.warn_p else 0
        tests["ng_rate"] = {"rate": k / n, "expected": expected, "p": p_ng, "level": LEVELS[level]}
        if level:
            reasons.append(f"NG rate {k}/{n} = {k / n:.1%} against an expected {expected:.1%} (p {p_ng:.1e})")
        worst = max(worst, level)
        if worst:
            log.warning("drift %s: %s", LEVELS[worst], "; ".join(reasons))
        return {"level": LEVELS[worst], "code": worst, "reasons": reasons, "n": n, "tests": tests,
                "reference": ref.source}

    # ---- reading -----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """{"level": OK|WARN|ALARM, "code": 0|1|2, "reasons", "n" (window fill), "tests" (per quantity), "skipped",
        "parts", "reference"}."""
        with self._lock:
            return {**self._status, "skipped": self.skipped, "parts": self.parts, "window": self.settings.window}

    @property
    def level(self) -> int:
        """0 OK, 1 WARN, 2 ALARM (the PLC's `Drift`)."""
        with self._lock:
            return int(self._status["code"])


def references_for(packages: Sequence[Any]) -> dict[str, DriftReference]:
    """digest -> DriftReference of the ModelPackages that carry a `drift` section."""
    out: dict[str, DriftReference] = {}
    for pkg in packages:
        section = pkg.manifest.get("drift")
        if section is not None:
            out[pkg.digest] = DriftReference.from_manifest(section, str(pkg.root / "manifest.json"))
    return out
