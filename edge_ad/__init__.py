"""edge-ad: multi-class unsupervised anomaly detection from the lab to the production line.

The package is split in two halves that never mix:
- line side (`edge_ad.runtime`, `edge_ad.sources`, `edge_ad.plc`): numpy, OpenCV, PyYAML, ONNX Runtime/TensorRT only;
- lab side (`edge_ad.models`, `edge_ad.data`, `edge_ad.train`, `edge_ad.evaluate`, `edge_ad.export`): PyTorch, timm, ONNX.
"""

__version__ = "0.1.0"
