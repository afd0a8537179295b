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
