# syntax=docker/dockerfile:1
# Cloud analytics: decodes TransTIC bitstreams on the GPU and runs the vision tasks.
# Build from the repository root:  docker build -f deploy/analytics.Dockerfile -t transtic/analytics:0.1.0 .
# Run with the NVIDIA container toolkit (docker run --gpus all ...); without a GPU it falls
# back to the CPU (device "auto").
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH

# The project needs Python >= 3.11; Ubuntu 22.04 ships it as python3.11.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /app

# The CUDA build of torch first: the largest layer, cached across code changes.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml ./
COPY transtic ./transtic
RUN pip install ".[services]"

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
    TRANSTIC_ANALYTICS_DB_PATH=/var/lib/transtic/frames.db

EXPOSE 8080 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"]

ENTRYPOINT ["python", "-m", "services.analytics"]
