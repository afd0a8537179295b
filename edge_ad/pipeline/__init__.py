"""Streaming inference on the line: a source's frames through a model package to results and recorders.

Iterator form:

    from edge_ad.pipeline import stream
    for result in stream("packages/dinomaly-tiny", "gige://192.168.1.20?pixel_format=BayerRG8"):
        print(result.frame["seq"], result.status)

Callback form (returns the final counters; Ctrl-C / SIGTERM stop it gracefully):

    from edge_ad.pipeline import run
    run("packages/dinomaly-tiny", "gige://CAM01", on_result=lambda result, image: plc.send(result))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.pipeline.stats import PipelineStats, status_line
from edge_ad.pipeline.stream import Pipeline, Policy
from edge_ad.runtime.detector import Detector
from edge_ad.runtime.result import Result
from edge_ad.sources.base import Source
from edge_ad.station.recorders import CallbackRecorder, Recorder

__all__ = ["Pipeline", "PipelineStats", "run", "status_line", "stream"]


def stream(model: Detector | str | Path, source: Source | str | int, *, policy: Policy | None = None,
           recorders: Sequence[Recorder] = (), max_frames: int | None = None, backend: str = "auto",
           queue_size: int = 2, **options: Any) -> Pipeline:
    """A Pipeline to iterate: `for result in stream(package, source): ...` (stops when the loop is left).

    policy None: `all` for folders and video files (a result per image), `latest` for live cameras; see
    edge_ad.pipeline.stream for how drops are reported.

    `options` go to the Pipeline (max_batch, expect_size) or, for URI sources, to the source (pixel_format, fps...).
    """
    return Pipeline(model, source, policy=policy, recorders=recorders, max_frames=max_frames, backend=backend,
                    queue_size=queue_size, **options)


def run(model: Detector | str | Path, source: Source | str | int,
        on_result: Callable[[Result, np.ndarray | None], object] | None = None, *, policy: Policy | None = None,
        recorders: Sequence[Recorder] = (), max_frames: int | None = None, backend: str = "auto",
        queue_size: int = 2,
        handle_signals: bool = True, **options: Any) -> dict[str, Any]:
    """Callback form: run to the end (source exhausted, max_frames, SIGINT/SIGTERM) and return the final counters."""
    everything = [*recorders, *([CallbackRecorder(on_result)] if on_result is not None else [])]
    pipe = stream(model, source, policy=policy, recorders=everything, max_frames=max_frames, backend=backend,
                  queue_size=queue_size, output=False, **options)
    main = threading.current_thread() is threading.main_thread()
    restore = pipe.install_signal_handlers() if handle_signals and main else None
    try:
        return pipe.run()
    finally:
        if restore is not None:
            restore()
