# fpgaas builder worker: hls4ml + QKeras + TensorFlow, and g++/make for the emulation library
# and hls4ml's C simulation. A second venv, /opt/keras3 (Keras 3 on JAX, hls4ml, HGQ2; pinned by
# docker/requirements/builder-keras3.txt), parses `.keras` models (FPGAAS_KERAS3_PYTHON): HGQ2's
# `qkeras` shim would shadow QKeras in /opt/fpgaas. v++ is not in the image: on a Vitis host mount
# the installation at /opt/Xilinx and put its bin on PATH (docker/compose.yaml shows how); without
# it builds say `xclbin_status: "v++ not on PATH"` and record the v++ commands.
#
# Build from the repository root (see `make images`):
#   buildah bud --isolation chroot --build-arg BASE_IMAGE=localhost/fpgaas-base:bookworm \
#       -f docker/Dockerfile.builder -t localhost/fpgaas-builder:0.1.0 .
# Runs as uid/gid 10001 with a read-only root filesystem; writable: /tmp (tmpfs, builds stage
# there) and the artifact repository at /models.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS venv
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
COPY docker/requirements/builder.txt /tmp/requirements.txt
COPY docker/requirements/builder-keras3.txt /tmp/requirements-keras3.txt
RUN --mount=type=bind,source=build/images/wheels,target=/wheels \
    python3 -m venv /opt/fpgaas \
    && /opt/fpgaas/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        -r /tmp/requirements.txt fpgaas==0.1.0 \
    && python3 -m venv /opt/keras3 \
    && /opt/keras3/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        -r /tmp/requirements-keras3.txt

FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 g++=4:12.2.0-3 make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 fpgaas \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin fpgaas \
    && mkdir -p /models \
    && chown 10001:10001 /models
COPY --from=venv /opt/fpgaas /opt/fpgaas
COPY --from=venv /opt/keras3 /opt/keras3
ENV PATH=/opt/fpgaas/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FPGAAS_KERAS3_PYTHON=/opt/keras3/bin/python
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/opt/fpgaas/bin/fpgaas"]
CMD ["--help"]
