"""User-facing errors: each names the file/field and what was expected vs found. The CLI prints them
without a traceback; anything else is a bug and keeps its traceback."""


class EdgeADError(Exception):
    """Base class of errors caused by input (files, configs, packages), not by edge-ad itself."""


class DataError(EdgeADError):
    """A dataset or image problem: missing folder, unreadable image, missing mask, empty category."""


class ConfigError(EdgeADError):
    """A bad YAML/CLI option: unknown key, wrong type, out-of-range value."""


class PackageError(EdgeADError):
    """A model package that is incomplete, corrupt, tampered with or of an unsupported schema version."""


class GateError(EdgeADError):
    """A converted model (fp16/int8) failed the accuracy gate; no package was written."""


class ExportError(EdgeADError):
    """An exported or converted graph failed a check (TensorRT's rules, parity with PyTorch); nothing was written."""


class SourceError(EdgeADError):
    """A camera or input that cannot be opened or configured (names the source and what was expected)."""


class ConnectionLost(Exception):
    """Raised by a live source's `_fetch` when the device is gone; handled by reconnecting, never seen by users."""


class PlcError(EdgeADError):
    """A PLC configuration problem: bad URL or option, missing protocol library."""


class PlcConnectionError(PlcError):
    """The PLC (or its server) cannot be reached or answered with an error; the link reconnects."""


class TensorRTMissingError(ConfigError):
    """The `tensorrt` Python package cannot be imported on this machine."""


class EngineBuildError(EdgeADError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


class CudaMissingError(ConfigError):
    """Neither cuda-python nor pycuda can be imported."""


class CudaError(EdgeADError):
    """A CUDA call failed (no driver, no device, out of memory, ...)."""


class AlignmentError(EdgeADError):
    """A frame could not be registered to the package's reference (score under its bound, transform out of range):
    the part is not where the model expects it, so it is never inspected (fail-safe NG, fault ALIGNMENT)."""
