# edge-ad for x86-64 servers and line PCs with an NVIDIA GPU, on NVIDIA's TensorRT container (TensorRT, CUDA 12,
# cuDNN preinstalled). From the repository root:
#   docker build -f docker/x86.Dockerfile -t edge-ad:x86 .
#   docker run --rm --gpus all --network host -v $PWD/packages:/packages edge-ad:x86 selftest /packages
# Pick a TRT_TAG whose CUDA 12 the host driver supports (NGC release notes); 24.12-py3 = TensorRT 10.7, CUDA 12.6.
ARG TRT_TAG=24.12-py3
FROM nvcr.io/nvidia/tensorrt:${TRT_TAG}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
# The container's TensorRT is used as is (a venv with --system-site-packages sees it), so this installs the `cuda`
# extra without its tensorrt-cu12 requirement: one TensorRT, and onnxruntime-gpu as the only ONNX Runtime.
RUN python3 -m venv --system-site-packages /opt/edge-ad
COPY pyproject.toml README.md /src/edge-ad/
COPY edge_ad /src/edge-ad/edge_ad
COPY export_profiles /src/edge-ad/export_profiles
COPY calibration /src/edge-ad/calibration
RUN /opt/edge-ad/bin/pip install --no-cache-dir "/src/edge-ad[plc]" "onnxruntime-gpu>=1.20" \
        "cuda-python>=12.6.1,<13" \
 && rm -rf /src/edge-ad
ENV PATH=/opt/edge-ad/bin:$PATH
# No TensorRT/CUDA import here (a build has no GPU runtime); check the image on the machine instead:
#   docker run --rm --gpus all edge-ad:x86 doctor
RUN python -c "import edge_ad.runtime, edge_ad.cli.main; print('edge-ad runtime imports')"

ENTRYPOINT ["edge-ad"]
CMD ["doctor"]
