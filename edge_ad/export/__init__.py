"""Lab-side export: PyTorch model -> ONNX -> model package, verified against the PyTorch reference.

`edge_ad.export(run, precision=...)` (this module, called) is `edge_ad.api.export`."""

from edge_ad._callable_module import make_callable

make_callable(__name__, "export")
