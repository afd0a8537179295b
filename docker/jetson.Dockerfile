# edge-ad line-side runtime for Jetson Orin on JetPack 6 (L4T r36.x: TensorRT 10.3, CUDA 12.6).
# Build on the Jetson (or with `docker buildx build --platform linux/arm64`), from the repository root:
#   docker build -f docker/jetson.Dockerfile -t edge-ad:jetson .
# Run with the GPU, the cameras' network and a folder of packages:
#   docker run --rm --runtime nvidia --network host -v $PWD/packages:/packages edge-ad:jetson selftest /packages
# L4T_TAG must match the host's L4T release (cat /etc/nv_tegra_release): r36.4.0 for JetPack 6.1/6.2.
ARG L4T_TAG=r36.4.0
FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG}

# TensorRT's Python bindings come from JetPack (python3-libnvinfer), never from pip: the aarch64 wheels on PyPI are
# SBSA builds (10.5+) that would shadow them. Aravis + PyGObject from the OS for GigE Vision cameras.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3-venv python3-pip python3-libnvinfer python3-gi gir1.2-aravis-0.8 aravis-tools \
 && rm -rf /var/lib/apt/lists/*

# --system-site-packages: the venv sees JetPack's tensorrt and the OS's gi (Aravis)
RUN python3 -m venv --system-site-packages /opt/edge-ad
COPY pyproject.toml README.md /src/edge-ad/
COPY edge_ad /src/edge-ad/edge_ad
COPY export_profiles /src/edge-ad/export_profiles
COPY calibration /src/edge-ad/calibration
RUN /opt/edge-ad/bin/pip install --no-cache-dir "/src/edge-ad[jetson,plc]" "harvesters>=1.4" \
 && rm -rf /src/edge-ad
ENV PATH=/opt/edge-ad/bin:$PATH
# No TensorRT import here: on JetPack 6 it needs libnvdla_compiler.so, which only the NVIDIA runtime mounts at
# `docker run` (BuildKit and `buildx --platform linux/arm64` builds have no GPU runtime). Check the image on the
# device instead:  docker run --rm --runtime nvidia edge-ad:jetson doctor
RUN python -c "import edge_ad.runtime, edge_ad.cli.main; print('edge-ad runtime imports')"

ENTRYPOINT ["edge-ad"]
CMD ["doctor"]
