# syntax=docker/dockerfile:1
# Edge encoder: gRPC Encoder service (`serve`) and the camera/folder/video client (`stream`).
# Build from the repository root:  docker build -f deploy/encoder.Dockerfile -t transtic/encoder:0.1.0 .
# Base image pinned by digest, the same as analytics' (docs/deployment.md: how to refresh it).
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
FROM ${PYTHON_BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /app

# Every Python package pinned with its hash, the same lock as the analytics image
# (requirements/services.lock, scripts/lock.py): the versions the tests ran. That lock's
# torch is PyPI's wheel, the CUDA build, so this image carries CUDA libraries it never
# uses: PyTorch publishes its CPU-only wheels on download.pytorch.org alone, outside the
# registries that the lock is made from and checked against (docs/deployment.md).
COPY requirements/services.lock ./requirements/
RUN pip install --require-hashes -r requirements/services.lock

COPY pyproject.toml ./
# transtic/ includes the shipped default codecs (transtic/weights/data/*.pth.tar).
COPY transtic ./transtic
RUN pip install --no-deps --no-build-isolation .
# The native CPU kernels (window attention, Winograd convs), built for every x86
# instruction set the image may meet, with a compiler that is removed again in the same
# layer; the service picks the one matching the host's CPU at run time
# (docs/performance.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && python -m transtic.kernels build --cache-dir /opt/transtic/kernels --isa AVX512 AVX2 DEFAULT \
    && chmod -R go-w /opt/transtic/kernels \
    && apt-get purge -y --auto-remove g++ \
    && rm -rf /var/lib/apt/lists/*

COPY services ./services

# Extra weights (the paper's release files) can be mounted read-only at /weights; the process runs unprivileged, as a fixed
# uid/gid (the k8s manifests' runAsUser/fsGroup), and the code stays root-owned. No keys
# or certificates are baked in: they are mounted at run time (docs/security.md).
RUN groupadd --gid 10001 transtic \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin transtic \
    && mkdir -p /weights && chown 10001:10001 /weights
USER 10001:10001

ENV TRANSTIC_ENCODER_HOST=0.0.0.0 \
    TRANSTIC_ENCODER_GRPC_PORT=50052 \
    TRANSTIC_ENCODER_HTTP_PORT=9102 \
    TRANSTIC_ENCODER_DEVICE=cpu \
    TRANSTIC_ENCODER_WEIGHTS_CACHE_DIR=/weights \
    TRANSTIC_ENCODER_KERNEL_CACHE_DIR=/opt/transtic/kernels

EXPOSE 50052 9102
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
    CMD ["python", "-m", "services.encoder", "probe", "--address", "127.0.0.1:50052"]

ENTRYPOINT ["python", "-m", "services.encoder"]
CMD ["serve"]
