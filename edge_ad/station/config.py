"""`StationConfig`: every option of a station in one frozen dataclass, the single source of `edge-ad serve`'s and
`edge-ad run`'s flags, of station.yaml's validation and of `--print-config`.

Precedence is flag > file > default, and "not given" is `None` on the command line, so a flag that repeats its
default still wins over the file. Durations carry their unit in their name (`budget_ms`, `status_every_s`,
`retention_days`), the same on the command line and in the file.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edge_ad.errors import ConfigError
from edge_ad.runtime.backends import BACKENDS
from edge_ad.runtime.trt.engine_options import ENGINE_PRECISIONS, EngineOptions
from edge_ad.station.view import check_sensitivity

SERVE, RUN = "serve", "run"
BOTH = frozenset({SERVE, RUN})
TRIGGERS = ("plc", "camera", "free")
POLICIES = ("latest", "all")
TriggerMode = Literal["plc", "camera", "free"]
Policy = Literal["latest", "all"]

#: station.yaml sections -> {key: field} (the flat field names are accepted as well)
SECTIONS: dict[str, dict[str, str]] = {
    "retention": {"days": "retention_days", "rows": "retention_rows", "image_budget_mb": "image_budget_mb"},
    "mqtt": {"url": "mqtt", "topic": "mqtt_topic", "spool": "mqtt_spool"},
    "database": {"url": "db", "images": "db_images"},
    "ui": {"listen": "ui", "users": "ui_users", "dataset": "ui_dataset", "settings": "ui_settings", "fps": "ui_fps"},
    "drift": {"window": "drift_window", "ng_rate": "drift_ng_rate"},
}


def _opt(default: Any, help: str, *, kind: type = str, commands: frozenset[str] = BOTH,
         check: Callable[[Any], str | None] | None = None, metavar: str | None = None, group: str = "station",
         flag: str | None = None) -> Any:
    meta = {"help": help, "kind": kind, "commands": commands, "check": check, "metavar": metavar, "group": group,
            "flag": flag}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a number > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number >= 0"


def _at_least_one(v: Any) -> str | None:
    return None if v >= 1 else "an integer >= 1"


def _choice(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"one of {', '.join(choices)}"


def _finite(v: Any) -> str | None:
    return None if math.isfinite(v) else "a finite number"


def _sensitivity(v: Any) -> str | None:
    try:
        check_sensitivity(v)
    except ConfigError:
        return "a number in (0, 100]"
    return None


_RECIPE_HELP = ("extra recipe the PLC (or the HMI) selects with RecipeRequest = N (repeatable; N = 2..65535); "
                "PACKAGE#CATEGORY aligns to that product's reference")


@dataclass(frozen=True)
class StationConfig:
    """Everything a station runs with; see samples/station.yaml. Fields marked serve-only are ignored by `run`."""

    # ---- model and camera -------------------------------------------------------------------------------------
    package: str | None = _opt(None, "model package directory (recipe 1; PACKAGE#CATEGORY: that product)",
                               group="model")
    recipes: dict[int, str] = _opt({}, _RECIPE_HELP, kind=dict, commands=frozenset({SERVE}), metavar="N=PACKAGE",
                                   group="model", flag="--recipe")
    shadow: str | None = _opt(None, "a candidate package that judges the same parts off the critical path (never "
                              "delays or changes what the PLC gets); its verdict goes in the shadow_ columns and the "
                              "agreement on the HMI and /metrics", metavar="PACKAGE", group="model")
    backend: str = _opt("auto", "inference engine (auto: TensorRT on an NVIDIA GPU, else OpenVINO if installed, else "
                        "ONNX Runtime)", check=_choice(*BACKENDS), group="model")
    threshold: float | None = _opt(None, "image-score threshold (default: the package's)", kind=float,
                                   check=_finite, group="model")
    sensitivity: float = _opt(1.0, "effective threshold = threshold / sensitivity, in (0, 100]", kind=float,
                              check=_sensitivity, group="model")
    precision: str | None = _opt(None, "TensorRT: which graph the engine is built from (default: what `edge-ad "
                                 "build` recorded for this device, else the package's precision)",
                                 check=_choice(*ENGINE_PRECISIONS), group="engine")
    batch: int | None = _opt(None, "TensorRT: engine batch (default: the tiles of one frame)", kind=int,
                             check=_at_least_one, group="engine")
    workspace: int | None = _opt(None, "TensorRT: builder workspace limit in MiB", kind=int, check=_at_least_one,
                                 metavar="MB", group="engine")
    dla: int | None = _opt(None, "TensorRT: engine for DLA core N (GPU fallback on)", kind=int, check=_non_negative,
                           metavar="N", group="engine")
    tf32: bool = _opt(False, "TensorRT fp32 engines: let FP32 layers run in TF32 (off by default)", kind=bool,
                      group="engine")
    trusted_keys: list[str] = _opt([], "only load packages signed by this Ed25519 public key (repeatable; also "
                                   "$EDGE_AD_TRUSTED_KEYS)", kind=list, metavar="PUB.pem", group="model",
                                   flag="--trusted-key")
    source: str | None = _opt(None, "frame source: gige://SERIAL | gige://IP | gentl://PRODUCER.cti?serial=S | "
                              "usb://0 | rtsp://... | video file | directory | glob", group="camera")
    source_options: dict[str, str] = _opt({}, "source option, e.g. pixel_format=BayerRG8, fps=30, "
                                          "roi=0,0,640,480, trigger=Line0, rate=10, loop=true (repeatable)",
                                          kind=dict, metavar="KEY=VALUE", group="camera", flag="--source-option")
    views: list[dict[str, Any]] = _opt([], "one more camera of the same part: NAME=SOURCE (repeatable; station.yaml "
                                       "`views:` also takes package and source_options per view); every view is "
                                       "judged, one verdict per part", kind=list, metavar="NAME=SOURCE",
                                       group="camera", flag="--view")
    view_window_ms: float | None = _opt(None, "multi-view: time after the trigger (or the first view's frame) in "
                                        "which every view must deliver its frame; a view without one is NG, no "
                                        "image (default: half the budget)", kind=float, check=_positive,
                                        commands=frozenset({SERVE}), group="camera")
    # ---- PLC handshake (serve) --------------------------------------------------------------------------------
    plc: str | None = _opt(None, "opcua://HOST:PORT | opcua-client://HOST:PORT | modbus://HOST:PORT | "
                           "modbus-client://HOST:PORT | s7://HOST[:PORT]/RACK/SLOT/DB", commands=frozenset({SERVE}),
                           metavar="URL", group="plc")
    trigger: TriggerMode = _opt("plc", "plc: a PLC Trigger edge grabs one frame; camera: every frame of a hardware-"
                        "triggered camera is a part; free: inspect frames continuously", check=_choice(*TRIGGERS),
                        commands=frozenset({SERVE}), group="plc")
    budget_ms: float = _opt(200.0, "inspection time budget; later = fail-safe NG with Late = 1", kind=float,
                            check=_positive, commands=frozenset({SERVE}), group="plc")
    ack: bool = _opt(True, "wait for the PLC's ResultAck before posting the next result (--no-ack: post them "
                     "--hold-ms apart)", kind=bool, commands=frozenset({SERVE}), group="plc", flag="--no-ack")
    hold_ms: float = _opt(50.0, "with --no-ack: minimum time between results", kind=float, check=_non_negative,
                          commands=frozenset({SERVE}), group="plc")
    result_queue: int = _opt(64, "results waiting for the PLC while it is away", kind=int, check=_at_least_one,
                             commands=frozenset({SERVE}), group="plc")
    heartbeat_ms: float = _opt(500.0, "Heartbeat increment period", kind=float, check=_positive,
                               commands=frozenset({SERVE}), group="plc")
    plc_watchdog_ms: float = _opt(2000.0, "fault when PlcHeartbeat stops changing this long; 0 = off", kind=float,
                                  check=_non_negative, commands=frozenset({SERVE}), group="plc")
    stop_at_end: bool = _opt(False, "trigger camera/free: stop once a finite source (folder, video) is done and "
                             "delivered", kind=bool, commands=frozenset({SERVE}), group="plc")
    # ---- free-running pipeline (run) --------------------------------------------------------------------------
    policy: Policy | None = _opt(None, "when the model is slower than the source: drop the oldest waiting frame "
                              "(latest; default for cameras) or wait (all; default for folders and videos)",
                              check=_choice(*POLICIES), commands=frozenset({RUN}), group="pipeline")
    frame_queue: int = _opt(2, "frames waiting for inference", kind=int, check=_at_least_one,
                            commands=frozenset({RUN}), group="pipeline")
    max_frames: int | None = _opt(None, "stop after this many frames from the source", kind=int,
                                  check=_at_least_one, commands=frozenset({RUN}), group="pipeline")
    # ---- drift monitor ----------------------------------------------------------------------------------------
    drift_window: int = _opt(200, "drift monitor: recent parts compared with the package's good images (packages "
                             "exported with a drift reference; 0 = off)", kind=int,
                             check=lambda v: None if v == 0 or v >= 20 else "0 (off) or an integer >= 20",
                             metavar="N", group="drift")
    drift_ng_rate: float | None = _opt(None, "drift monitor: the NG rate this line expects (default: the package's "
                                       "false-reject rate); more raises WARN/ALARM", kind=float,
                                       check=lambda v: None if 0 <= v < 1 else "a number in [0, 1)", group="drift")
    # ---- model lifecycle (serve) ------------------------------------------------------------------------------
    rollback_parts: int = _opt(50, "a promoted model is watched for this many parts and rolled back automatically "
                               "when it leaves the band below", kind=int, check=_at_least_one,
                               commands=frozenset({SERVE}), metavar="N", group="lifecycle")
    rollback_max_ng_rate: float = _opt(0.5, "band: the most NG parts a promoted model may give (share)", kind=float,
                                       check=lambda v: None if 0 <= v <= 1 else "a number in [0, 1]",
                                       commands=frozenset({SERVE}), group="lifecycle")
    rollback_max_fault_rate: float = _opt(0.1, "band: the most FAILED/LATE parts a promoted model may give (share)",
                                          kind=float, check=lambda v: None if 0 <= v <= 1 else "a number in [0, 1]",
                                          commands=frozenset({SERVE}), group="lifecycle")
    # ---- outputs ----------------------------------------------------------------------------------------------
    station: str = _opt("station", "station name stored with every result, in MQTT topics and on the HMI",
                        group="outputs")
    save_ng: str | None = _opt(None, "save NG images, overlays and result JSON here", metavar="DIR",
                               group="outputs")
    ng_keep: int = _opt(500, "keep at most this many NG items in --save-ng", kind=int, check=_at_least_one,
                        group="outputs")
    results_log: str | None = _opt(None, "append every result as one JSON line (rotated at 50 MB, 5 backups)",
                                   metavar="FILE.jsonl", group="outputs")
    db: str | None = _opt(None, "traceability database: a SQLite file (created if missing) or "
                          "postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass)", metavar="FILE.db|URL",
                          group="traceability")
    db_images: str | None = _opt(None, "where NG/OK images are kept (default: FILE_images beside a SQLite file, "
                                 "trace_images_STATION for PostgreSQL)", metavar="DIR", group="traceability")
    keep_ok_every: int = _opt(0, "also keep every N-th OK image (NG/failed images always; 0 = none)", kind=int,
                              check=_non_negative, metavar="N", group="traceability")
    retention_days: float = _opt(90.0, "delete rows older than this", kind=float, check=_positive,
                                 group="traceability")
    retention_rows: int | None = _opt(None, "keep at most this many rows (default: no limit)", kind=int,
                                      check=_at_least_one, group="traceability")
    image_budget_mb: float = _opt(2048.0, "disk budget of the stored images, oldest deleted first", kind=float,
                                  check=_positive, group="traceability")
    mqtt: str | None = _opt(None, "mqtt[s]://[user@]host[:port][?ca=FILE&password_env=VAR|password_file=FILE]",
                            metavar="URL",
                            group="mqtt")
    mqtt_topic: str | None = _opt(None, "topic root, Unified-Namespace style site/area/line/station (default "
                                  "edge-ad/STATION)", metavar="TOPIC", group="mqtt")
    mqtt_spool: str | None = _opt(None, "offline queue directory (default: mqtt_spool_STATION beside --db, else "
                                  "in the working directory)", metavar="DIR", group="mqtt")
    ui: str | None = _opt(None, "serve the HMI here, e.g. 0.0.0.0:8080 (:8080 = this machine only)",
                          metavar="HOST:PORT", group="hmi")
    ui_users: str | None = _opt(None, "HMI users (edge-ad hmi-user FILE NAME); without it no login",
                                metavar="FILE", group="hmi")
    ui_dataset: str | None = _opt(None, "where 'mark as false reject' and capture mode put images",
                                  metavar="DIR", group="hmi")
    ui_settings: str | None = _opt(None, "persisted HMI changes such as the sensitivity (default: "
                                   "hmi_settings_STATION.json beside --db, else in the working directory)",
                                   metavar="FILE.json", group="hmi")
    ui_hosts: list[str] = _opt([], "more Host names the HMI answers to (a DNS name or a reverse proxy's); loopback and "
                                   "this machine's names and addresses always", kind=list, metavar="NAME",
                               group="hmi", flag="--ui-host")
    ui_fps: float = _opt(5.0, "most live-view frames encoded per second", kind=float, check=_positive,
                         group="hmi")
    # ---- process ----------------------------------------------------------------------------------------------
    status_every_s: float = _opt(5.0, "seconds between status lines; 0 = none", kind=float, check=_non_negative,
                                 group="process")
    duration_s: float | None = _opt(None, "stop after this many seconds", kind=float, check=_positive,
                                    group="process")

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name), "station config")
        for n in self.recipes:
            if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 0xFFFF:
                raise ConfigError(f"station config: recipes: expected indices N = 2..65535 (recipe 1 is the "
                                  f"package), got {n!r}")
        if self.views:
            _check_views(self.views, "station config")
            if self.source is not None:
                raise ConfigError("station config: give either source (one camera) or views (several), not both: "
                                  "put the first camera in views too")
        if self.view_window_ms is not None and not self.view_window_ms < self.budget_ms:
            raise ConfigError(f"station config: view_window_ms: expected less than budget_ms ({self.budget_ms}), "
                              f"got {self.view_window_ms}")

    # ---- building ---------------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, flags: Mapping[str, Any] | None = None, config: str | Path | None = None) -> StationConfig:
        """Defaults, then the YAML file `config`, then every flag that was given (not None)."""
        values: dict[str, Any] = {}
        if config is not None:
            values.update(read_station_yaml(config))
        for name, v in (flags or {}).items():
            if v is not None:
                values[name] = _coerce(name, v, "command line")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The resolved options under their field names (what --print-config shows; a valid station.yaml)."""
        return asdict(self)

    def with_(self, **changes: Any) -> StationConfig:
        return replace(self, **changes)

    def engine(self) -> EngineOptions | None:
        """The TensorRT engine options chosen here, or None (then `edge-ad build`'s recorded default applies)."""
        opts = EngineOptions(precision=self.precision, batch=self.batch, workspace_mb=self.workspace,
                             dla_core=self.dla, tf32=self.tf32)
        return None if opts.is_unset() else opts

    def sources(self) -> list[dict[str, Any]]:
        """The cameras: each view's {name, source, package (None = the station's recipe), source_options}, or the
        one `source` as a view named "main"."""
        if self.views:
            return [{"name": v["name"], "source": v["source"], "package": v.get("package"),
                     "source_options": {**self.source_options, **dict(v.get("source_options") or {})}}
                    for v in self.views]
        if self.source is None:
            return []
        return [{"name": "main", "source": self.source, "package": None, "source_options": dict(self.source_options)}]

    def rollback_band(self) -> Any:
        """The band a promoted model must stay in (edge_ad.station.lifecycle.RollbackBand)."""
        from edge_ad.station.lifecycle import RollbackBand

        return RollbackBand(parts=self.rollback_parts, min_parts=min(10, self.rollback_parts),
                            max_ng_rate=self.rollback_max_ng_rate, max_fault_rate=self.rollback_max_fault_rate)

    def recipe_table(self) -> dict[int, str]:
        """Recipe index -> package path, 1 being `package`."""
        if self.package is None:
            raise ConfigError("station config: package: missing (give it as an argument or `package:` in --config)")
        return {1: self.package, **self.recipes}


_FIELDS = {f.name: f for f in fields(StationConfig)}


def _check(name: str, value: Any, where: str) -> None:
    f = _FIELDS[name]
    kind, check = f.metadata["kind"], f.metadata["check"]
    if value is None:
        if f.default is not None:
            raise ConfigError(f"{where}: {name}: expected {_kind_name(kind)}, got null")
        return
    ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or \
         (kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where}: {name}: expected {_kind_name(kind)}, got {value!r}")
    if check is not None and (why := check(value)) is not None:
        raise ConfigError(f"{where}: {name}: expected {why}, got {value!r}")


_VIEW_KEYS = {"name", "source", "package", "source_options"}


def _check_views(views: list[Any], where: str) -> list[dict[str, Any]]:
    """Every view a mapping with a unique name and a source; package and source_options optional."""
    from edge_ad.station.record import MAX_VIEWS

    if not 1 <= len(views) <= MAX_VIEWS:
        raise ConfigError(f"{where}: views: expected 1..{MAX_VIEWS} views (the PLC signal set has {MAX_VIEWS}), "
                          f"got {len(views)}")
    out, names = [], set()
    for i, v in enumerate(views):
        if not isinstance(v, Mapping):
            raise ConfigError(f"{where}: views[{i}]: expected a mapping with name and source, got {v!r}")
        unknown = set(v) - _VIEW_KEYS
        if unknown:
            raise ConfigError(f"{where}: views[{i}]: unknown key(s) {sorted(unknown)} (known: {sorted(_VIEW_KEYS)})")
        for key in ("name", "source"):
            if not isinstance(v.get(key), str) or not v[key]:
                raise ConfigError(f"{where}: views[{i}].{key}: expected a non-empty string, got {v.get(key)!r}")
        if v.get("package") is not None and (not isinstance(v["package"], str) or not v["package"]):
            raise ConfigError(f"{where}: views[{i}].package: expected a package path, got {v['package']!r}")
        opts = v.get("source_options") or {}
        if not isinstance(opts, Mapping):
            raise ConfigError(f"{where}: views[{i}].source_options: expected a mapping, got {opts!r}")
        if v["name"] in names:
            raise ConfigError(f"{where}: views[{i}].name: {v['name']!r} is used twice")
        names.add(v["name"])
        out.append({"name": v["name"], "source": v["source"], "package": v.get("package"),
                    "source_options": {str(k): str(x) for k, x in opts.items()}})
    return out


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
            dict: "a mapping"}[kind]


def _coerce(name: str, value: Any, where: str) -> Any:
    """One value for field `name` from a file or a flag: numbers as float where a float is expected, mappings
    and lists checked item by item."""
    if name not in _FIELDS:
        raise ConfigError(f"{where}: {name}: unknown option (see samples/station.yaml)")
    kind = _FIELDS[name].metadata["kind"]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if name == "recipes" and isinstance(value, Mapping):
        out: dict[int, str] = {}
        for k, v in value.items():
            try:
                idx = int(k)
            except (TypeError, ValueError):
                idx = -1
            if not 2 <= idx <= 0xFFFF or idx in out or not isinstance(v, str) or not v:
                raise ConfigError(f"{where}: recipes: expected N: PACKAGE with a new index N in 2..65535 (recipe 1 "
                                  f"is the package), got {k!r}: {v!r}")
            out[idx] = v
        return out
    if name == "source_options" and isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if name == "views" and isinstance(value, (list, tuple)):
        return _check_views(list(value), where)
    if name in ("trusted_keys", "ui_hosts") and isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: {name}: expected a list of names/paths, got {value!r}")
        return list(value)
    _check(name, value, where)
    return value


def read_station_yaml(path: str | Path) -> dict[str, Any]:
    """station.yaml -> {field: value}, every key and type checked (ConfigError naming the file and the key)."""
    from edge_ad.fileio import read_yaml_file

    doc = read_yaml_file(path, "station config")
    where = str(path)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of station settings")
    flat: dict[str, Any] = {}

    def put(name: str, value: Any, key: str) -> None:
        if name in flat:
            raise ConfigError(f"{where}: {key}: {name} is given twice")
        flat[name] = _coerce(name, value, where)

    for key, value in doc.items():
        k = str(key).replace("-", "_")
        if k in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                if sub not in SECTIONS[k]:
                    raise ConfigError(f"{where}: {key}.{sub}: unknown key (known: {sorted(SECTIONS[k])})")
                put(SECTIONS[k][sub], v, f"{key}.{sub}")
        elif k in _FIELDS:
            put(k, value, k)
        else:
            raise ConfigError(f"{where}: {key}: unknown key (see samples/station.yaml)")
    return flat


# ---- the command line ---------------------------------------------------------------------------------------------
_GROUPS = {"model": "model", "engine": "TensorRT engine (none given: what `edge-ad build` recorded for this device)",
           "camera": "camera", "plc": "PLC handshake", "pipeline": "free-running pipeline",
           "outputs": "outputs", "traceability": "traceability (one durable row per inspection; `edge-ad results`)",
           "mqtt": "results on the plant network (MQTT, QoS 1, spooled on disk while the broker is away)",
           "hmi": "operator web HMI", "process": "process",
           "drift": "drift monitor (README: Keeping a station right)",
           "lifecycle": "model lifecycle: promote, rollback (README: Keeping a station right)"}


def add_station_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """The flags of `command` ("serve" or "run"), derived from StationConfig; every default is None (not given)."""
    p.add_argument("package", nargs="?", default=None, help=_FIELDS["package"].metadata["help"] +
                   " (or `package:` in --config)")
    p.add_argument("--config", metavar="STATION.yaml",
                   help="the whole station in one file (samples/station.yaml); flags given as well override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved options (defaults < --config < flags) as YAML and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(StationConfig):
        meta = f.metadata
        if f.name == "package" or command not in meta["commands"]:
            continue
        g = groups.get(meta["group"]) or groups.setdefault(meta["group"], p.add_argument_group(_GROUPS[meta["group"]]))
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kind = meta["kind"]
        default_txt = "" if f.default in (None, MISSING) or kind in (dict, list) else f" (default {f.default!r})"
        help_text = meta["help"] + default_txt
        if kind is bool:
            g.add_argument(flag, dest=f.name, action="store_const", const=flag != "--no-ack", default=None,
                           help=help_text)
        elif kind in (dict, list):
            g.add_argument(flag, dest=f.name, action="append", default=None, metavar=meta["metavar"] or "VALUE",
                           help=help_text)
        else:
            choices = {"backend": BACKENDS, "trigger": TRIGGERS, "policy": POLICIES,
                       "precision": ENGINE_PRECISIONS}.get(f.name)
            g.add_argument(flag, dest=f.name, type=kind, default=None, choices=choices, metavar=meta["metavar"],
                           help=help_text)


def config_from_args(args: argparse.Namespace, command: str) -> StationConfig:
    """The StationConfig of parsed flags plus --config: flag > file > default."""
    flags: dict[str, Any] = {}
    for f in fields(StationConfig):
        if f.name != "package" and command not in f.metadata["commands"]:
            continue
        v = getattr(args, f.name, None)
        if v is not None and f.name == "recipes":
            v = _pairs(v, "--recipe", "N=PACKAGE")
        elif v is not None and f.name == "source_options":
            v = _pairs(v, "--source-option", "KEY=VALUE")
        elif v is not None and f.name == "views":
            v = [{"name": k, "source": src} for k, src in (next(iter(_pairs([item], "--view", "NAME=SOURCE").items()))
                                                            for item in v)]
        flags[f.name] = v
    return StationConfig.resolve(flags, args.config)


def _pairs(items: list[str], flag: str, form: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag}: expected {form}, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def print_config(config: StationConfig) -> str:
    """The resolved options as station.yaml text."""
    import yaml

    return str(yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False))
