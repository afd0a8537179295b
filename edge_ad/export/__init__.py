"""Lab-side export: PyTorch model -> ONNX -> model package, verified against the PyTorch reference. From Python:
`edge_ad.api.export(run, precision=...)` or `run.export(...)` on an `edge_ad.fit` result."""
