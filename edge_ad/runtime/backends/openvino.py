"""OpenVINO backend for x86 line PCs: the package's ONNX graph compiled by OpenVINO for the CPU (or an Intel GPU).

What runs is what the manifest's `onnx.backends.openvino` names (`ModelPackage.graph_for`): the graph and the
INFERENCE_PRECISION_HINT the export gate ran on OpenVINO. Export chooses:
- fp32: the fp32 graph in f32, set explicitly because OpenVINO's CPU default on AMX/AVX512-BF16 machines is bf16,
  which would change the numbers of a package gated in fp32;
- bf16: the same fp32 graph executed in bf16;
- fp16 and int8: the main graph (fp16, or Q/DQ between fp16 ops) in bf16 where the exporting CPU had bf16 and the
  gate passed it, which lets OpenVINO run the non-int8 parts in bf16 (1.3x the f32 hint on dinomaly-s int8, see
  docs/performance.md); otherwise the CPU graph in f32.
A CPU without native bf16 runs a bf16 choice in f32 (closer to fp32, slower), with a warning.

Settings are deliberate: INFERENCE_NUM_THREADS = `threads` (default the physical cores), PERFORMANCE_HINT
"LATENCY" (one stream, the whole batch in one request) or "THROUGHPUT" (the streams OpenVINO picks for the
threads, or `streams`; a batch of tiles or views is split over them and run as parallel asynchronous requests);
hint "auto" (the default) takes LATENCY for packages that inspect a frame as one image and THROUGHPUT for packages
whose geometry cuts a frame into several tiles (every call then carries them all). CACHE_DIR is the package's
engines/openvino folder when it is writable (a restart reuses the compiled blob: seconds instead of a recompile).
The graph is compiled for the static batch sizes it is called with.
Optional: `pip install "edge-ad[openvino]"`; torch-free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError, PackageError
from edge_ad.optional import installed, require
from edge_ad.runtime.backends.base import closed_error, physical_cores, run_in_chunks
from edge_ad.runtime.package import GraphChoice, ModelPackage

log = logging.getLogger(__name__)
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
#: "auto": LATENCY for packages whose frame is one model input, THROUGHPUT for frames of several tiles
HINT_CHOICES = ("auto", *HINTS)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def _core() -> Any:
    return require("openvino", "backend 'openvino'").Core()


def available(package: ModelPackage) -> bool:
    """True when openvino imports, has a CPU device and the package's precision is one it runs."""
    if not installed("openvino"):
        return False
    try:
        return package.precision in PRECISIONS and "CPU" in _core().available_devices
    except Exception as e:  # a broken OpenVINO install must not stop "auto" from falling back
        log.debug("openvino unavailable: %s", e)
        return False


def cpu_has_bf16(core: Any, device: str = "CPU") -> bool:
    """Whether OpenVINO reports native bf16 on `device` (AVX512-BF16 or AMX on Intel CPUs)."""
    try:
        return "BF16" in core.get_property(device, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # older devices/plugins without the property
        return False


def cpu_bf16_available() -> bool:
    """Whether this machine's CPU runs bf16 natively in OpenVINO (openvino must be installed)."""
    return cpu_has_bf16(_core())


class OpenVinoBackend:
    """Backend running the package's OpenVINO graph on `device` ("CPU", "GPU", ...); `choice` overrides the
    manifest's (the export gate runs candidates before they are written)."""

    name = "openvino"

    def __init__(self, package: ModelPackage, *, device: str = "CPU", threads: int | None = None,
                 hint: str = "auto", streams: int | None = None, cache: bool = True,
                 choice: GraphChoice | None = None) -> None:
        if hint not in HINT_CHOICES:
            raise ConfigError(f"openvino hint: expected one of {list(HINT_CHOICES)}, got {hint!r}")
        if hint == "auto":  # measured: streams win from 4 tiles a frame, lose at 1 (docs/performance.md)
            geometry = package.geometry()
            hint = "throughput" if geometry is not None and geometry.max_views() > 1 else "latency"
        if threads is not None and threads < 1:
            raise ConfigError(f"threads: expected an integer >= 1, got {threads}")
        if streams is not None and (hint != "throughput" or streams < 1):
            raise ConfigError(f"openvino streams: expected an integer >= 1 with hint 'throughput', got {streams} "
                              f"with hint {hint!r}")
        if package.precision not in PRECISIONS:
            raise ConfigError(f"backend 'openvino': package precision {package.precision!r} is not one of "
                              f"{list(PRECISIONS)}")
        self.core = _core()
        if device not in self.core.available_devices:
            raise ConfigError(f"backend 'openvino': device {device!r} not found; available: "
                              f"{self.core.available_devices}")
        self.choice = choice or package.graph_for("openvino")
        self.onnx_path: Path = package.root / self.choice.file
        self.precision = package.precision
        self.input_name, self.input_hw, self.map_hw = package.input_name, package.input_hw, package.map_hw
        self.threads = threads or physical_cores()
        wanted = self.choice.inference_precision or "f32"
        bf16 = wanted == "bf16" and device == "CPU" and cpu_has_bf16(self.core, device)
        if wanted == "bf16" and not bf16:
            log.warning("%s: %s runs in bf16 (onnx.backends.openvino), but this %s has no native bf16: running f32 "
                        "(closer to fp32, slower)", package.root, self.choice.file, device)
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint]}
        if device == "CPU":
            self.config["INFERENCE_NUM_THREADS"] = self.threads
            self.config["INFERENCE_PRECISION_HINT"] = "bf16" if bf16 else "f32"
        if hint == "latency":
            self.config["NUM_STREAMS"] = 1
        elif streams is not None:
            self.config["NUM_STREAMS"] = streams
        cache_dir = package.root / "engines" / "openvino"
        if cache and os.access(package.root, os.W_OK):
            cache_dir.mkdir(parents=True, exist_ok=True)
            self.config["CACHE_DIR"] = str(cache_dir)
        self.device, self.hint = device, hint
        try:
            self._model = self.core.read_model(str(self.onnx_path))
        except Exception as e:  # OpenVINO raises RuntimeError for graphs it cannot read
            raise PackageError(f"{self.onnx_path}: OpenVINO cannot read the graph: {e}") from e
        self._check_io()
        self.max_batch: int | None = None
        self._compiled: dict[int, Any] = {}
        self._requests: dict[int, Any] = {}
        self._queues: dict[int, Any] = {}
        self.streams = 1
        self._closed = False
        self.providers = [f"OpenVINO {device} {self.config.get('INFERENCE_PRECISION_HINT', 'default')}"]
        self._request(1)  # compile now: a graph OpenVINO cannot compile fails at load, not at the first part
        log.info("openvino on %s (%s, %s, threads=%d, hint=%s, streams=%d)", device, self.onnx_path.name,
                 self.config.get("INFERENCE_PRECISION_HINT"), self.threads, hint, self.streams)

    def _check_io(self) -> None:
        where = str(self.onnx_path)
        names = [next(iter(p.get_names()), "") for p in self._model.inputs]
        if names != [self.input_name]:
            raise PackageError(f"{where}: expected one graph input named {self.input_name!r} (manifest input.name), "
                               f"got {names}")
        shape = self._model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        want = [None, *self.input_hw, 3]
        if len(dims) != 4 or any(g is not None and w is not None and g != w for g, w in zip(dims, want)):
            raise PackageError(f"{where}: input {self.input_name!r}: expected shape [B, {self.input_hw[0]}, "
                               f"{self.input_hw[1]}, 3] (manifest input.height/width, NHWC), got {dims}")
        self._fixed_batch = dims[0]
        outs = {n for o in self._model.outputs for n in o.get_names()}
        missing = {"anomaly_map", "score"} - outs
        if missing:
            raise PackageError(f"{where}: expected graph outputs anomaly_map and score, missing {sorted(missing)}")

    def _compile(self, batch: int) -> Any:
        """The model compiled for a static batch size (or loaded from CACHE_DIR) on first use."""
        if batch not in self._compiled:
            model = self._model.clone()
            model.reshape({self.input_name: [batch, *self.input_hw, 3]})
            try:
                compiled = self.core.compile_model(model, self.device, self.config)
            except Exception as e:  # compile errors are RuntimeErrors with OpenVINO's message
                raise PackageError(f"{self.onnx_path}: OpenVINO cannot compile the graph for {self.device}: "
                                   f"{e}") from e
            self._compiled[batch] = compiled
            self.streams = int(compiled.get_property("NUM_STREAMS")) if self.hint == "throughput" else 1
        return self._compiled[batch]

    def _request(self, batch: int) -> Any:
        """The synchronous infer request of a static batch size."""
        if batch not in self._requests:
            self._requests[batch] = self._compile(batch).create_infer_request()
        return self._requests[batch]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,H,W,3] -> (float32 [B,1,h,w], float32 [B]); a graph with a fixed batch gets padded chunks.
        With hint "throughput" a batch is split into one chunk per stream, run as parallel requests."""
        if self._closed:
            raise closed_error(self.name)
        n = batch.shape[0]
        if self.hint == "throughput" and self._fixed_batch is None and n > 1:
            return self._run_streams(batch)
        step = self._fixed_batch or n

        def infer(chunk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            req = self._request(step)
            req.infer({self.input_name: chunk})
            # the request owns its output buffers: copy before the next call overwrites them
            return (np.array(req.get_tensor("anomaly_map").data[:k], dtype=np.float32),
                    np.array(req.get_tensor("score").data, dtype=np.float32).reshape(-1)[:k])

        return run_in_chunks(batch, step, infer, self.map_hw, self.onnx_path)

    def _run_streams(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One chunk of ceil(B / streams) images per stream, as asynchronous requests of one AsyncInferQueue."""
        import openvino as ov

        n = batch.shape[0]
        self._compile(1)  # learns the stream count
        step = -(-n // min(self.streams, n))
        if step not in self._queues:
            self._queues[step] = ov.AsyncInferQueue(self._compile(step), self.streams)
        queue = self._queues[step]
        chunks = [np.ascontiguousarray(batch[s : s + step]) for s in range(0, n, step)]
        if chunks[-1].shape[0] < step:  # pad the last chunk with copies of its last image (static batch)
            last = chunks[-1]
            chunks[-1] = np.concatenate([last, np.repeat(last[-1:], step - last.shape[0], axis=0)])
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(chunks)

        def done(req: Any, i: int) -> None:
            out[i] = (np.array(req.get_tensor("anomaly_map").data, dtype=np.float32),
                      np.array(req.get_tensor("score").data, dtype=np.float32).reshape(-1))

        queue.set_callback(done)
        for i, chunk in enumerate(chunks):
            queue.start_async({self.input_name: chunk}, i)
        queue.wait_all()
        if any(o is None for o in out):
            raise PackageError(f"{self.onnx_path}: OpenVINO returned no result for some of {len(chunks)} requests")
        maps = np.concatenate([o[0] for o in out if o is not None])[:n]
        scores = np.concatenate([o[1] for o in out if o is not None])[:n]
        if maps.shape != (n, 1, *self.map_hw) or scores.shape != (n,):
            raise PackageError(f"{self.onnx_path}: outputs: expected anomaly_map {[n, 1, *self.map_hw]} and score "
                               f"[{n}], got {list(maps.shape)} and {list(scores.shape)}")
        return maps, scores

    def close(self) -> None:
        """Drop the compiled models and their infer requests."""
        self._closed = True
        self._queues.clear()
        self._requests.clear()
        self._compiled.clear()


def open_backend(package: ModelPackage, *, device: int | str | None = None, **options: Any) -> OpenVinoBackend:
    """Module-level factory of the backend contract (see base.py); options: threads, hint, streams, cache.
    `device` is an OpenVINO device name ("CPU", "GPU"); an integer GPU index means "GPU.<n>"."""
    name = "CPU" if device is None else f"GPU.{device}" if isinstance(device, int) else str(device)
    return OpenVinoBackend(package, device=name, **options)
