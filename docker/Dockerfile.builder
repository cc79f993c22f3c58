# fpgaas builder image: hls4ml + QKeras + g++ (the emulation library). v++ is not included:
# mount a Vitis installation and put it on PATH to get a real xclbin.
#   docker build -f docker/Dockerfile.builder -t fpgaas-builder:0.1.0 .
#   docker run --rm -v $PWD:/work fpgaas-builder:0.1.0 build /work/models/muon-pt.h5 --name muon-pt --out /work/repo/muon-pt/1
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fpgaas
COPY pyproject.toml README.md ./
COPY service service
COPY kernels kernels
COPY client client
COPY fpgaas fpgaas
COPY builder builder
RUN pip install --no-cache-dir '.[builder]'
ENV TF_USE_LEGACY_KERAS=1
ENTRYPOINT ["fpgaas"]
