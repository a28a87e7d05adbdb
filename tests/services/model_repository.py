"""Model-control test helpers: a model repository (weights files with sha256 manifests)
and the gRPC listing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_model_control import MODEL_CONTROL_SERVICE
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc


def add_to_repository(
    repository: Path, name: str, checkpoint: Path, *, task: str | None = None, quality: int = 0
) -> str:
    """Put ``checkpoint`` into the model repository as ``name`` (file + manifest with its
    sha256); returns the digest. Writing a name again makes a new version of it."""
    repository.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    target = f"{name}-{digest[:12]}.pth"
    shutil.copyfile(checkpoint, repository / target)
    manifest = {"file": target, "sha256": digest, "task": task, "quality": quality}
    (repository / f"{name}.json").write_text(json.dumps(manifest))
    return digest


def listed_models(channel: grpc.Channel) -> dict[str, Any]:
    """ListModels by name, after checking that health reports the service SERVING."""
    health = health_pb2_grpc.HealthStub(channel)
    check = health.Check(health_pb2.HealthCheckRequest(service=MODEL_CONTROL_SERVICE), timeout=10)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    control = api_pb2_grpc.ModelControlServiceStub(channel)
    return {m.name: m for m in control.ListModels(api_pb2.ListModelsRequest(), timeout=30).models}
