"""One string (CLI `--source`, config file) -> a Source.

    gige://SERIAL | gige://IP | gige://SERIAL@IP | gige://      GigE Vision via Aravis (gige:// = first camera)
    gentl:///path/producer.cti?serial=S | ?index=N           GenTL producer via harvesters
    usb://0                                                   USB camera via OpenCV
    rtsp://... http(s)://...                                   network stream via OpenCV (reconnects)
    part.mp4 | .avi | .mkv | .mov ...                          video file
    DIR | 'images/*.png' | image file                          folder / glob replay

Camera settings go in the query string (`gige://127.0.0.1?pixel_format=BayerRG8&fps=30&roi=0,0,640,480`) or as
keyword options; both are checked against the options the source accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from edge_ad.errors import ConfigError
from edge_ad.plugins import Plugin, Registry
from edge_ad.sources.base import Backoff, Source
from edge_ad.sources.opencv import NETWORK_SCHEMES

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}


def _roi(v: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in str(v).replace("x", ",").split(",")]
    if len(parts) != 4:
        raise ValueError("expected x,y,width,height")
    return parts[0], parts[1], parts[2], parts[3]


def _bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _packet(v: str | int) -> int | str:
    return "auto" if v == "auto" else int(v)


# option name -> (constructor keyword, parser); shared names mean the same thing everywhere
_CAMERA_OPTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pixel_format": ("pixel_format", str), "roi": ("roi", _roi), "exposure": ("exposure_us", float),
    "exposure_us": ("exposure_us", float), "gain": ("gain_db", float), "gain_db": ("gain_db", float),
    "fps": ("frame_rate", float), "frame_rate": ("frame_rate", float), "trigger": ("trigger", str),
    "stall_timeout": ("stall_timeout_s", float),
}
_OPTS: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "gige": {**_CAMERA_OPTS, "trigger_activation": ("trigger_activation", str), "buffers": ("buffers", int),
             "packet_size": ("packet_size", _packet)},
    "gentl": {**_CAMERA_OPTS, "serial": ("serial", str), "index": ("index", int), "buffers": ("buffers", int)},
    "stream": {"width": ("width", int), "height": ("height", int), "fps": ("fps", float),
               "timeout": ("timeout_s", float), "stall_timeout": ("stall_timeout_s", float)},
    "video": {"rate": ("rate", float), "loop": ("loop", _bool)},
    "folder": {"rate": ("rate", float), "loop": ("loop", _bool)},
}
_RECONNECT = {"reconnect_max": float, "give_up": float}


def _kwargs(kind: str, uri: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = _OPTS[kind]
    out: dict[str, Any] = {}
    backoff: dict[str, float] = {}
    for key, value in options.items():
        if kind not in ("video", "folder") and key in _RECONNECT:
            try:
                backoff[key] = float(value)
            except ValueError as e:
                raise ConfigError(f"{uri}: option {key}={value!r}: expected a number of seconds") from e
            continue
        if key not in allowed:
            extra = sorted(_RECONNECT) if kind not in ("video", "folder") else []
            raise ConfigError(f"{uri}: unknown option {key!r}; {kind} sources accept {sorted(allowed) + extra}")
        name, parse = allowed[key]
        try:
            out[name] = parse(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{uri}: option {key}={value!r}: {e}") from e
    if backoff:
        max_s = backoff.get("reconnect_max", 5.0)
        out["backoff"] = Backoff(initial_s=min(0.25, max_s), max_s=max_s, give_up_s=backoff.get("give_up"))
    return out


#: source kinds; each factory is the Source class, taking the target and the options of `_OPTS[kind]`
SOURCES: Registry[Source] = Registry("source")
for _kind, _factory, _needs, _what in (
        ("gige", "edge_ad.sources.aravis:GigESource", ("gi",), "GigE Vision camera through Aravis: gige://SERIAL"),
        ("gentl", "edge_ad.sources.gentl:GenTLSource", ("harvesters",),
         "GenTL producer through harvesters: gentl:///path/producer.cti?serial=S"),
        ("stream", "edge_ad.sources.opencv:VideoStreamSource", (),
         "USB camera or network stream through OpenCV: usb://0, rtsp://..."),
        ("video", "edge_ad.sources.opencv:VideoFileSource", (), "video file"),
        ("folder", "edge_ad.sources.folder:FolderSource", (), "folder, glob or image file replay")):
    SOURCES.register(Plugin(_kind, _factory, _what, needs=_needs, options=tuple(_OPTS[_kind])))


def _make(kind: str, target: Any, uri: str, options: dict[str, Any]) -> Source:
    """The source of `kind` for `target` (options checked against the kind's; the device opens on `open()`)."""
    return SOURCES.get(kind).load()(target, **_kwargs(kind, uri, options))


def open_source(source: str | int | Path | Source, **options: Any) -> Source:
    """Create (not yet open) the Source a URI/path names; ConfigError for unknown forms or options."""
    if isinstance(source, Source):
        if options:
            raise ConfigError(f"{source!r}: options {sorted(options)} apply only when the source is given as a URI")
        return source
    if isinstance(source, int):
        return _make("stream", source, f"usb://{source}", options)
    uri = str(source)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        scheme = scheme.lower()
        target, _, query = rest.partition("?")
        opts = {**dict(parse_qsl(query, keep_blank_values=True)), **options}
        if scheme == "gige":
            return _make("gige", target or None, uri, opts)
        if scheme == "gentl":
            if not target:
                raise ConfigError(f"{uri}: expected gentl://PATH/TO/PRODUCER.cti[?serial=S|index=N]")
            return _make("gentl", target, uri, opts)
        if scheme == "usb":
            try:
                index = int(target)
            except ValueError as e:
                raise ConfigError(f"{uri}: expected usb://INDEX, e.g. usb://0") from e
            return _make("stream", index, uri, opts)
        if uri.lower().startswith(NETWORK_SCHEMES):
            return _make("stream", uri, uri, options)  # the query belongs to the URL
        raise ConfigError(f"{uri}: unknown source scheme {scheme!r}; expected gige://, gentl://, usb://, rtsp://, "
                          "http(s)://, a video file, a directory or a glob")
    path = Path(uri)
    if path.suffix.lower() in VIDEO_EXTS:
        return _make("video", path, uri, options)
    return _make("folder", uri, uri, options)
