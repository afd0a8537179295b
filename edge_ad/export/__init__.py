"""Lab-side export: PyTorch model -> ONNX -> model package, verified against the PyTorch reference."""
