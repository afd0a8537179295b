"""GenICam cameras through a vendor GenTL producer (.cti) with harvesters.

Install: `pip install harvesters` (the `genicam` wheel it pulls in; genicam 1.6.0 ships the `viky.cti` simulator
used by the tests). harvesters has no reconnect of its own: on a failed fetch or a stall the image acquirer is
destroyed, the device list updated and the camera re-created, with backoff, and the outage is reported as a Gap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_ad.errors import DataError
from edge_ad.optional import install_hint
from edge_ad.sources.base import Backoff, ConnectionLost, LiveSource, SourceError
from edge_ad.sources.frame import Frame
from edge_ad.sources.pixel_formats import to_bgr

log = logging.getLogger(__name__)

INSTALL_HINT = "harvesters is not installed: " + install_hint("harvesters")


def import_harvester() -> Any:
    """harvesters.core.Harvester; SourceError with the install command when missing."""
    try:
        from harvesters.core import Harvester
    except ImportError as e:
        raise SourceError(f"{INSTALL_HINT} ({e})") from e
    return Harvester


def _set(node_map: Any, names: tuple[str, ...], value: Any, sid: str) -> None:
    """Set the first feature of `names` the camera has (vendors differ: ExposureTime vs ExposureTimeAbs)."""
    for name in names:
        node = getattr(node_map, name, None)
        if node is not None:
            try:
                node.value = value
            except Exception as e:
                raise SourceError(f"{sid}: {name}: cannot set {value!r}: {e}") from e
            return
    raise SourceError(f"{sid}: the camera has none of the features {list(names)}")


class GenTLSource(LiveSource):
    """Frames from a GenTL producer's camera, converted to BGR.

    Args:
        cti: path of the producer (.cti).
        serial: serial number of the camera; `index` picks by position instead (default: the first).
        roi, pixel_format, exposure_us, gain_db, frame_rate: applied through the camera's node map when given.
        trigger: "free-run", "software" (call `trigger()`) or a hardware line such as "Line0".
        buffers: number of buffers the acquirer cycles.
    """

    def __init__(self, cti: str | Path, serial: str | None = None, index: int | None = None,
                 roi: tuple[int, int, int, int] | None = None, pixel_format: str | None = None,
                 exposure_us: float | None = None, gain_db: float | None = None, frame_rate: float | None = None,
                 trigger: str = "free-run", buffers: int = 4, stall_timeout_s: float = 2.0,
                 backoff: Backoff | None = None, poll_s: float = 0.5) -> None:
        cti = Path(cti)
        sel = f"?serial={serial}" if serial is not None else (f"?index={index}" if index is not None else "")
        super().__init__(f"gentl://{cti}{sel}", stall_timeout_s=stall_timeout_s, backoff=backoff,
                         continuous=trigger == "free-run", poll_s=poll_s)
        if not cti.is_file():
            raise SourceError(f"{self.source_id}: GenTL producer {cti} not found (expected a .cti file)")
        if buffers < 1:
            raise SourceError(f"{self.source_id}: buffers: expected >= 1, got {buffers}")
        self.cti, self.serial, self.index = cti, serial, index
        self.roi, self.pixel_format = roi, pixel_format
        self.exposure_us, self.gain_db, self.frame_rate = exposure_us, gain_db, frame_rate
        self.trigger_mode, self.buffers = trigger, buffers
        self.incomplete_frames = 0
        self.info: dict[str, Any] = {}
        self._h: Any = None
        self._ia: Any = None

    def devices(self) -> list[dict[str, str]]:
        """Cameras the producer lists: id, serial, model, vendor (opens the producer if needed)."""
        if self._h is None:
            self._h = import_harvester()()
            self._h.add_file(str(self.cti))
        self._h.update()
        return [{"id": str(d.id_), "serial": str(d.serial_number), "model": str(d.model), "vendor": str(d.vendor)}
                for d in self._h.device_info_list]

    def _connect(self) -> None:
        devices = self.devices()
        if self.serial is not None:
            if not any(d["serial"] == self.serial for d in devices):
                raise SourceError(f"{self.source_id}: no camera with serial {self.serial!r}; found "
                                  f"{[d['serial'] for d in devices]}")
            self._ia = self._h.create({"serial_number": self.serial})
        else:
            idx = self.index or 0
            if idx >= len(devices):
                raise SourceError(f"{self.source_id}: index {idx}: the producer lists {len(devices)} camera(s)")
            self._ia = self._h.create(idx)
        self._configure(self._ia.remote_device.node_map)
        self._ia.num_buffers = self.buffers
        self._ia.start()
        self.info = {"devices": devices, "pixel_format": self._ia.remote_device.node_map.PixelFormat.value}

    def _configure(self, nm: Any) -> None:
        sid = self.source_id
        if self.pixel_format is not None:
            _set(nm, ("PixelFormat",), self.pixel_format, sid)
        if self.roi is not None:
            x, y, w, h = self.roi
            _set(nm, ("Width",), w, sid)
            _set(nm, ("Height",), h, sid)
            if x or y:
                _set(nm, ("OffsetX",), x, sid)
                _set(nm, ("OffsetY",), y, sid)
        if self.exposure_us is not None:
            _set(nm, ("ExposureTime", "ExposureTimeAbs"), float(self.exposure_us), sid)
        if self.gain_db is not None:
            _set(nm, ("Gain", "GainAbs"), float(self.gain_db), sid)
        if self.frame_rate is not None:
            _set(nm, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), float(self.frame_rate), sid)
        if self.trigger_mode != "free-run":
            _set(nm, ("TriggerSelector",), "FrameStart", sid)
            _set(nm, ("TriggerMode",), "On", sid)
            _set(nm, ("TriggerSource",), "Software" if self.trigger_mode == "software" else self.trigger_mode, sid)
        elif getattr(nm, "TriggerMode", None) is not None:
            _set(nm, ("TriggerMode",), "Off", sid)

    def _disconnect(self) -> None:
        ia, self._ia = self._ia, None
        if ia is not None:
            for step in (ia.stop, ia.destroy):
                try:
                    step()
                except Exception:  # the device may be gone
                    log.debug("%s: %s failed", self.source_id, step.__name__, exc_info=True)
        if self._h is not None:
            self._h.reset()
            self._h = None

    def _alive(self) -> bool:
        if self._ia is None:
            return False
        try:
            _ = self._ia.remote_device.node_map.Width.value
        except Exception:
            return False
        return True

    def _fetch(self, timeout: float) -> Frame | None:
        try:
            buf = self._ia.try_fetch(timeout=timeout)
        except Exception as e:  # GenTL errors: the device or its stream is gone
            raise ConnectionLost(f"fetch failed: {e}") from e
        if buf is None:
            return None
        with buf:
            mod = buf.module
            frame_id = _info(mod, "frame_id")
            cam_ts = _info(mod, "timestamp_ns")
            comp = buf.payload.components[0] if buf.payload.components else None
            if comp is None or not _info(mod, "is_complete", True):
                self.incomplete_frames += 1
                return self._emit(None, str(self.info.get("pixel_format", "?")), frame_id, cam_ts,
                                  error=f"{self.source_id}: frame {frame_id} incomplete")
            fmt = str(comp.data_format)
            try:
                image = to_bgr(comp.data, int(comp.width), int(comp.height), fmt)  # copies out of the buffer
            except DataError as e:
                return self._emit(None, fmt, frame_id, cam_ts, error=f"{self.source_id}: frame {frame_id}: {e}")
        return self._emit(image, fmt, frame_id, cam_ts)

    def trigger(self) -> None:
        """Fire a software trigger (trigger="software")."""
        if self.trigger_mode != "software":
            raise SourceError(f"{self.source_id}: trigger() needs trigger='software', not {self.trigger_mode!r}")
        if self._ia is None:
            raise SourceError(f"{self.source_id}: not connected")
        self._ia.remote_device.node_map.TriggerSoftware.execute()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["incomplete_frames"] = self.incomplete_frames
        return out


def _info(module: Any, name: str, default: Any = None) -> Any:
    """A buffer property that producers may not implement (GenTL NotAvailable) -> default."""
    try:
        return getattr(module, name)
    except Exception:
        return default
