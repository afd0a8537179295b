"""GigE Vision (and other GenICam) cameras through Aravis (PyGObject): selection, configuration, reconnect.

Install: `apt-get install gir1.2-aravis-0.8` (Debian/Ubuntu; `aravis-tools` for arv-tool and the fake camera) and
`pip install "PyGObject<3.51"`. Aravis is imported when a camera is opened, never at module import.

Selecting a camera:
- an IPv4 address opens that device directly over GVCP (no discovery broadcast; the local interface is the one
  the OS routes to it);
- `SERIAL@IP` opens the device at IP and checks that its serial number matches;
- anything else (serial number, Aravis device id such as `Basler-21234567`, MAC) is looked up by Aravis discovery,
  which broadcasts on every network interface.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

from edge_ad.errors import DataError
from edge_ad.optional import install_hint
from edge_ad.sources.base import Backoff, ConnectionLost, LiveSource, SourceError
from edge_ad.sources.frame import Frame
from edge_ad.sources.pixel_formats import PFNC_CODES, canonical, to_bgr

log = logging.getLogger(__name__)

INSTALL_HINT = "Aravis for Python is not installed: " + install_hint("gi")
TRIGGER_MODES = ("free-run", "software")  # or the name of a hardware line, e.g. "Line0"


def import_aravis() -> Any:
    """The Aravis 0.8 GI module; SourceError with the install command when missing."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as e:
        raise SourceError(f"{INSTALL_HINT} ({e})") from e
    return Aravis


def list_devices() -> list[dict[str, str]]:
    """Cameras Aravis discovers (broadcast on every interface): id, serial, address, vendor, model, protocol."""
    arv = import_aravis()
    arv.update_device_list()
    return [{"id": arv.get_device_id(i) or "", "serial": arv.get_device_serial_nbr(i) or "",
             "address": arv.get_device_address(i) or "", "physical_id": arv.get_device_physical_id(i) or "",
             "vendor": arv.get_device_vendor(i) or "", "model": arv.get_device_model(i) or "",
             "protocol": arv.get_device_protocol(i) or ""} for i in range(arv.get_n_devices())]


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _local_address_for(ip: str) -> str:
    """The local address the OS routes to `ip` (a UDP connect sends no packet)."""
    if ipaddress.IPv4Address(ip).is_loopback:
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((ip, 3956))
        return str(s.getsockname()[0])


class GigESource(LiveSource):
    """Frames from a GigE Vision camera via Aravis, converted to BGR.

    Args:
        device: IPv4 address, `SERIAL@IP`, serial number or Aravis device id (None: the first camera found).
        roi: (x, y, width, height) on the sensor.
        pixel_format: e.g. "Mono8", "BayerRG8", "RGB8" (None: the camera's current format).
        exposure_us, gain_db, frame_rate: set when given (checked against the camera's bounds).
        trigger: "free-run", "software" (call `trigger()` per frame) or a hardware line such as "Line0".
        trigger_activation: e.g. "RisingEdge" for hardware triggers.
        buffers: size of the buffer pool handed to the stream.
        packet_size: GVSP packet size in bytes, "auto" to negotiate, None to keep the camera's.
        stall_timeout_s: a free-running stream silent this long is treated as lost and reconnected.
        backoff: reconnect schedule (and optional give-up time).
    """

    def __init__(self, device: str | None = None, roi: tuple[int, int, int, int] | None = None,
                 pixel_format: str | None = None, exposure_us: float | None = None, gain_db: float | None = None,
                 frame_rate: float | None = None, trigger: str = "free-run", trigger_activation: str | None = None,
                 buffers: int = 8, packet_size: int | str | None = None, stall_timeout_s: float = 2.0,
                 backoff: Backoff | None = None, poll_s: float = 0.5) -> None:
        super().__init__(f"gige://{device or 'first'}", stall_timeout_s=stall_timeout_s, backoff=backoff,
                         continuous=trigger == "free-run", poll_s=poll_s)
        if buffers < 1:
            raise SourceError(f"{self.source_id}: buffers: expected >= 1, got {buffers}")
        if pixel_format is not None:
            try:
                canonical(pixel_format)
            except DataError as e:
                raise SourceError(f"{self.source_id}: {e}") from e
        if (
            packet_size is not None
            and packet_size != "auto"
            and (not isinstance(packet_size, int) or packet_size < 576)
        ):
            raise SourceError(
                f"{self.source_id}: packet_size: expected an integer >= 576 or 'auto', got {packet_size!r}"
            )
        if roi is not None and (len(roi) != 4 or roi[2] <= 0 or roi[3] <= 0 or roi[0] < 0 or roi[1] < 0):
            raise SourceError(f"{self.source_id}: roi: expected (x, y, width, height) with x, y >= 0 and a positive "
                              f"size, got {roi}")
        self.device, self.roi, self.pixel_format = device, roi, pixel_format
        self.exposure_us, self.gain_db, self.frame_rate = exposure_us, gain_db, frame_rate
        self.trigger_mode, self.trigger_activation = trigger, trigger_activation
        self.buffers, self.packet_size = buffers, packet_size
        self.incomplete_frames = 0
        self.info: dict[str, Any] = {}
        self._cam: Any = None
        self._stream: Any = None
        self._dev: Any = None
        self._handler: int | None = None
        self._control_lost = threading.Event()

    # ---- connection ---------------------------------------------------------------------------------------------
    def _open_camera(self, arv: Any) -> Any:
        dev = self.device
        serial, _, ip = dev.partition("@") if dev and "@" in dev else (None, "", dev)
        if ip and _is_ipv4(ip):
            from gi.repository import Gio

            local = _local_address_for(ip)
            try:
                gv = arv.GvDevice.new(Gio.InetAddress.new_from_string(local), Gio.InetAddress.new_from_string(ip))
            except Exception as e:  # GLib.Error: no answer on GVCP
                raise SourceError(f"{self.source_id}: no GigE Vision camera answers at {ip} (via {local}): {e}") from e
            cam = arv.Camera.new_with_device(gv)
            found = cam.get_device_serial_number() or ""
            if serial and found != serial:
                raise SourceError(f"{self.source_id}: the camera at {ip} has serial {found!r}, expected {serial!r}")
            return cam
        target = None
        if dev:
            devices = list_devices()
            for d in devices:
                if dev in (d["id"], d["serial"], d["physical_id"], d["address"]):
                    target = d["id"]
                    break
            if target is None:
                seen = ", ".join(f"{d['id']} (serial {d['serial']}, {d['address']})" for d in devices) or "none"
                raise SourceError(f"{self.source_id}: no camera with id, serial or address {dev!r}; found: {seen}")
        try:
            return arv.Camera.new(target)
        except Exception as e:
            raise SourceError(f"{self.source_id}: cannot open camera {target or '(first)'}: {e}") from e

    def _connect(self) -> None:
        arv = import_aravis()
        self._control_lost.clear()
        cam = self._cam = self._open_camera(arv)
        self._configure(cam)
        self._dev = cam.get_device()
        self._handler = self._dev.connect("control-lost", self._on_control_lost)
        stream = self._stream = cam.create_stream(None, None)
        if stream is None:
            raise SourceError(f"{self.source_id}: cannot create a stream")
        payload = cam.get_payload()
        for _ in range(self.buffers):
            stream.push_buffer(arv.Buffer.new_allocate(payload))
        cam.start_acquisition()
        x, y, w, h = cam.get_region()
        self.info = {"device_id": cam.get_device_id(), "serial": cam.get_device_serial_number(),
                     "vendor": cam.get_vendor_name(), "model": cam.get_model_name(), "roi": [x, y, w, h],
                     "pixel_format": cam.get_pixel_format_as_string(), "payload": payload,
                     "packet_size": cam.gv_get_packet_size() if cam.is_gv_device() else None}
        log.info("%s: streaming %s", self.source_id, self.info)

    def _configure(self, cam: Any) -> None:
        sid = self.source_id
        if self.pixel_format is not None:
            available = list(cam.dup_available_pixel_formats_as_strings() or [])
            want = canonical(self.pixel_format)
            name = next((a for a in available if a == self.pixel_format or _canon_or_none(a) == want), None)
            if name is None:
                raise SourceError(f"{sid}: pixel_format: the camera offers {available}, not {self.pixel_format!r}")
            cam.set_pixel_format_from_string(name)
        if self.roi is not None:
            x, y, w, h = self.roi
            sw, sh = cam.get_sensor_size()
            if x + w > sw or y + h > sh:
                raise SourceError(f"{sid}: roi {self.roi} exceeds the {sw}x{sh} sensor")
            cam.set_region(x, y, w, h)
        for name, value, bounds, setter in (
            ("exposure_us", self.exposure_us, cam.get_exposure_time_bounds, cam.set_exposure_time),
            ("gain_db", self.gain_db, cam.get_gain_bounds, cam.set_gain),
            ("frame_rate", self.frame_rate, cam.get_frame_rate_bounds, cam.set_frame_rate),
        ):
            if value is None:
                continue
            lo, hi = bounds()
            if not lo <= value <= hi:
                raise SourceError(f"{sid}: {name}: expected a value in [{lo:g}, {hi:g}], got {value:g}")
            setter(value)
        if self.trigger_mode == "free-run":
            cam.clear_triggers()
        else:
            src = "Software" if self.trigger_mode == "software" else self.trigger_mode
            available = list(cam.dup_available_trigger_sources() or [])
            if src not in available:
                raise SourceError(
                    f"{sid}: trigger: expected 'free-run' or one of {available}, got {self.trigger_mode!r}"
                )
            cam.set_trigger(src)
            if self.trigger_activation is not None:
                cam.set_string("TriggerActivation", self.trigger_activation)
        if self.packet_size is not None and cam.is_gv_device():
            if self.packet_size == "auto":
                cam.gv_auto_packet_size()
            else:
                cam.gv_set_packet_size(int(self.packet_size))

    def _on_control_lost(self, *_: Any) -> None:
        """Called by Aravis' heartbeat thread when the camera stops answering."""
        self._control_lost.set()

    def _disconnect(self) -> None:
        cam, dev, handler = self._cam, self._dev, self._handler
        self._cam = self._stream = self._dev = self._handler = None
        if cam is not None:
            try:
                cam.stop_acquisition()
            except Exception:  # the camera may be gone: nothing to stop
                log.debug("%s: stop_acquisition failed", self.source_id, exc_info=True)
        if dev is not None and handler is not None:
            dev.disconnect(handler)

    def _alive(self) -> bool:
        """Control channel check for triggered cameras that are silent: read the Width register."""
        if self._cam is None or self._control_lost.is_set():
            return False
        try:
            self._cam.get_integer("Width")
        except Exception:
            return False
        return True

    # ---- frames ---------------------------------------------------------------------------------------------------
    def _fetch(self, timeout: float) -> Frame | None:
        if self._control_lost.is_set():
            raise ConnectionLost("control lost (camera stopped answering)")
        arv = import_aravis()
        buf = self._stream.timeout_pop_buffer(max(1, int(timeout * 1e6)))
        if buf is None:
            if self._control_lost.is_set():
                raise ConnectionLost("control lost (camera stopped answering)")
            return None
        status = buf.get_status()
        if status in (arv.BufferStatus.ABORTED, arv.BufferStatus.CLEARED):
            self._stream.push_buffer(buf)
            return None
        frame_id, cam_ts = int(buf.get_frame_id()), int(buf.get_timestamp()) or None
        if status != arv.BufferStatus.SUCCESS:
            self._stream.push_buffer(buf)
            self.incomplete_frames += 1
            return self._emit(None, self.info.get("pixel_format", "?"), frame_id, cam_ts,
                              error=f"{self.source_id}: frame {frame_id} incomplete ({status.value_nick})")
        data = buf.get_data()  # a copy: the buffer goes straight back to the pool
        w, h, code = buf.get_image_width(), buf.get_image_height(), buf.get_image_pixel_format()
        self._stream.push_buffer(buf)
        fmt = PFNC_CODES.get(code, f"0x{code:08X}")
        try:
            image = to_bgr(data, w, h, code)
        except DataError as e:
            return self._emit(None, fmt, frame_id, cam_ts, error=f"{self.source_id}: frame {frame_id}: {e}")
        return self._emit(image, fmt, frame_id, cam_ts)

    def trigger(self) -> None:
        """Fire a software trigger (trigger="software"); SourceError in other modes or while disconnected."""
        if self.trigger_mode != "software":
            raise SourceError(f"{self.source_id}: trigger() needs trigger='software', not {self.trigger_mode!r}")
        if self._cam is None:
            raise SourceError(f"{self.source_id}: not connected")
        self._cam.software_trigger()

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["incomplete_frames"] = self.incomplete_frames
        return out


def _canon_or_none(name: str) -> str | None:
    try:
        return canonical(name)
    except DataError:
        return None
