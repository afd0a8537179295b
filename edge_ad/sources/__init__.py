"""Frame sources for the line: GigE Vision (Aravis), GenTL (harvesters), OpenCV (files, USB, RTSP), folders.

    from edge_ad.sources import open_source
    with open_source("gige://127.0.0.1?pixel_format=BayerRG8&fps=30") as cam:
        for frame in cam:            # Frame: image (BGR uint8), seq, frame_id, timestamps, pixel_format, gap
            ...

Camera libraries are imported only when such a source is opened.
"""

from edge_ad.sources.base import Backoff, LiveSource, Source, SourceError
from edge_ad.sources.factory import open_source
from edge_ad.sources.frame import Frame, Gap

__all__ = ["Backoff", "Frame", "Gap", "LiveSource", "Source", "SourceError", "open_source"]
