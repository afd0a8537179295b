"""Export a model to ONNX with the uint8 NHWC input and in-graph normalisation, and verify it against PyTorch."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edge_ad.models.base import AnomalyModel
from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.ranking import rank_agreement

log = logging.getLogger(__name__)


class PackagedModel(nn.Module):
    """uint8 [B,H,W,3] in the manifest's colour order -> the model's normalised float input -> (map, score).

    Normalising inside the graph sends 4x fewer bytes to the device than float32 and keeps the host side trivial.
    """

    mean255: torch.Tensor
    std255: torch.Tensor

    def __init__(self, model: AnomalyModel, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean255", torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std255", torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # cast first: TensorRT takes a UINT8 network input only straight into a Cast (graph_check rule uint8-io)
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        x = (x - self.mean255) / self.std255
        amap, score = self.model(x)
        return amap.to(torch.float32), score.to(torch.float32)


def export_onnx(
    model: AnomalyModel, *, opset: int = 17, dynamic_batch: bool = True, input_name: str = "image"
) -> onnx.ModelProto:
    """Trace the packaged model at its fixed input size (batch dynamic) into an ONNX ModelProto."""
    pre = model.preprocess
    wrapped = PackagedModel(model, pre).eval()
    dummy = torch.zeros((2 if dynamic_batch else 1, pre.crop[0], pre.crop[1], 3), dtype=torch.uint8)
    buf = io.BytesIO()
    axes = {input_name: {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about constant shapes are intended here
        # the TorchScript exporter (dynamo=False) writes to a file object; the stubs name paths only
        torch.onnx.export(
            wrapped, (dummy,), buf, dynamo=False, opset_version=opset, input_names=[input_name],  # type: ignore[arg-type]
            output_names=["anomaly_map", "score"], dynamic_axes=axes, do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    return proto


@dataclass
class Parity:
    """ONNX Runtime vs PyTorch on the same uint8 inputs."""

    n_images: int
    max_abs_map_diff: float
    max_abs_score_diff: float
    score_spearman: float
    map_hw: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {"backend": "onnxruntime-cpu", "n_images": self.n_images, "max_abs_map_diff": self.max_abs_map_diff,
                "max_abs_score_diff": self.max_abs_score_diff, "score_spearman": self.score_spearman}


def check_parity(model: AnomalyModel, onnx_bytes: bytes, images: np.ndarray, batch: int = 4) -> Parity:
    """Run both backends over uint8 [N,H,W,3] crops and compare maps and scores."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    wrapped = PackagedModel(model, model.preprocess).eval()
    maps_t, maps_o, sc_t, sc_o = [], [], [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            m_t, s_t = wrapped(torch.from_numpy(x))
            m_o, s_o = sess.run(["anomaly_map", "score"], {sess.get_inputs()[0].name: x})
            maps_t.append(m_t.numpy())
            sc_t.append(s_t.numpy())
            maps_o.append(m_o)
            sc_o.append(s_o)
    mt, mo = np.concatenate(maps_t), np.concatenate(maps_o)
    st, so_ = np.concatenate(sc_t), np.concatenate(sc_o)
    return Parity(
        n_images=len(images),
        max_abs_map_diff=float(np.max(np.abs(mt - mo))),
        max_abs_score_diff=float(np.max(np.abs(st - so_))),
        score_spearman=rank_agreement(st, so_),
        map_hw=(int(mo.shape[-2]), int(mo.shape[-1])),
    )
