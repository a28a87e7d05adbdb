# syntax=docker/dockerfile:1
# Cloud analytics: decodes TransTIC bitstreams on the GPU and runs the vision tasks.
# Build from the repository root:  docker build -f deploy/analytics.Dockerfile -t transtic/analytics:0.1.0 .
#
# One CUDA stack: a slim Python base and the torch wheel from PyPI, which brings its own
# CUDA 13.0 runtime, cuDNN and NCCL as pip packages. Only the host's NVIDIA driver comes
# from outside (the NVIDIA container toolkit mounts it): R580 or newer (>= 580.65.06 on
# Linux), the minimum for CUDA 13.0. On an older driver torch sees no usable GPU:
# device=auto then runs on the CPU (the start-up log line names the device), so GPU hosts
# set device=cuda (deploy/compose.gpu.yml, the k8s gpu overlay), where the codecs fail to
# load and /readyz stays 503 with the reason in the log instead.
#
# Base image pinned by digest (docs/deployment.md says how to refresh it).
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
FROM ${PYTHON_BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /app

# Every Python package pinned with its hash (requirements/services.lock, written by
# scripts/lock.py from pyproject's ranges; the versions the tests ran). torch is PyPI's
# wheel, the CUDA 13.0 build, whose CUDA libraries are locked dependencies of their own.
# The lock is its own layer, cached across code changes; the project then installs
# without resolving anything again.
COPY requirements/services.lock ./requirements/
RUN pip install --require-hashes -r requirements/services.lock

COPY pyproject.toml ./
# transtic/ includes the shipped default codecs (transtic/weights/data/*.pth.tar),
# installed with the package: the image analyses frames without any download.
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

# A fixed non-root uid/gid (the k8s manifests' runAsUser/fsGroup). The code stays
# root-owned, so the service cannot modify itself. No keys or certificates are baked
# in: TLS material and API keys are mounted at run time (docs/security.md).
RUN groupadd --gid 10001 transtic \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin transtic \
    && mkdir -p /weights /var/lib/transtic \
    && chown 10001:10001 /weights /var/lib/transtic
USER 10001:10001

ENV TRANSTIC_ANALYTICS_HOST=0.0.0.0 \
    TRANSTIC_ANALYTICS_GRPC_PORT=50051 \
    TRANSTIC_ANALYTICS_HTTP_PORT=8080 \
    TRANSTIC_ANALYTICS_WEIGHTS_CACHE_DIR=/weights \
    TRANSTIC_ANALYTICS_KERNEL_CACHE_DIR=/opt/transtic/kernels \
    TRANSTIC_ANALYTICS_DB_PATH=/var/lib/transtic/frames.db \
    TRANSTIC_ANALYTICS_CODEC_CHECKPOINT=transtic_small_cls_q3

EXPOSE 8080 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"]

ENTRYPOINT ["python", "-m", "services.analytics"]
