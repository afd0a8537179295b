"""The station core shared by both schedulers (the PLC-triggered `edge_ad.plc.Inspector` and the free-running
`edge_ad.pipeline.Pipeline`): the inspection record and its decision codes, the typed `InspectionEvent` every
output receives, the one `RecordBuilder`, the `Recorder` protocol with its file recorders, the `StationView` the
HMI reads, and the `StationConfig` that `edge-ad serve`, `edge-ad run` and station.yaml are derived from.
Line side: numpy, OpenCV and the runtime only."""

from typing import TYPE_CHECKING

from edge_ad._lazy import lazy_exports

if TYPE_CHECKING:
    from edge_ad.station.config import StationConfig
    from edge_ad.station.event import DetectorLike, InspectionEvent, PackageIdentity, RecordBuilder
    from edge_ad.station.record import DECISIONS, DefectCode, InspectionRecord, decision_of
    from edge_ad.station.recorders import (
        CallbackRecorder,
        Fanout,
        JsonlRecorder,
        NGFolderRecorder,
        Recorder,
        event_dict,
    )
    from edge_ad.station.view import StationSnapshot, StationView

_EXPORTS = {
    "DECISIONS": "edge_ad.station.record", "DefectCode": "edge_ad.station.record",
    "InspectionRecord": "edge_ad.station.record", "decision_of": "edge_ad.station.record",
    "DetectorLike": "edge_ad.station.event", "InspectionEvent": "edge_ad.station.event",
    "PackageIdentity": "edge_ad.station.event", "RecordBuilder": "edge_ad.station.event",
    "CallbackRecorder": "edge_ad.station.recorders", "Fanout": "edge_ad.station.recorders",
    "JsonlRecorder": "edge_ad.station.recorders", "NGFolderRecorder": "edge_ad.station.recorders",
    "Recorder": "edge_ad.station.recorders", "event_dict": "edge_ad.station.recorders",
    "StationSnapshot": "edge_ad.station.view", "StationView": "edge_ad.station.view",
    "StationConfig": "edge_ad.station.config",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["DECISIONS", "CallbackRecorder", "DefectCode", "DetectorLike", "Fanout", "InspectionEvent",
           "InspectionRecord", "JsonlRecorder", "NGFolderRecorder", "PackageIdentity", "RecordBuilder", "Recorder",
           "StationConfig", "StationSnapshot", "StationView", "decision_of", "event_dict"]
