"""A second language on the contract: the Node client in examples/node, which loads
proto/ at run time, calls both real services (API keys on), and what grpcurl relies on
(reflection v1 serving the contract's file) checked with Python's reflection client.
The same processes check the wiring of the plaintext health-only port (grpc_health_port)
that the kubelet's gRPC probe uses.

node comes from Debian and @grpc/grpc-js + @grpc/proto-loader from npm, both installed by
scripts/setup_env.sh (which CI runs): missing tools fail here, they are not skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_helpers import REPO, SERVING, Analytics, Encoder, free_port, grpc_health, png
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration

API_KEY = "node-client-test-key-0123456789abcdef"
HEIGHT, WIDTH = 48, 80
NODE_MODULES = REPO / ".tools" / "node_modules"
CLIENT = REPO / "examples" / "node" / "client.js"
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


@dataclass
class Services:
    analytics: Analytics
    encoder: Encoder
    health_ports: dict[str, int]


@pytest.fixture(scope="module")
def services(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    work = tmp_path_factory.mktemp("node")
    keys = work / "keys.txt"
    keys.write_text(f"# the test's only key\n{API_KEY}\n")
    cache = work / "weights"
    cache.mkdir()
    auth = ["--api-keys-file", str(keys)]
    ports = {"analytics": free_port(), "encoder": free_port()}
    analytics = Analytics(
        codec_checkpoint, work / "frames.db", cache, work / "a.log",
        [*auth, "--grpc-health-port", str(ports["analytics"])],
    )  # fmt: skip
    encoder = Encoder(
        codec_checkpoint, cache, work / "e.log",
        [*auth, "--grpc-health-port", str(ports["encoder"])],
    )  # fmt: skip
    try:
        analytics.start()
        encoder.start()
        analytics.wait_ready()
        encoder.wait_ready()
        yield Services(analytics, encoder, ports)
    finally:
        encoder.stop()
        analytics.stop()


def run_node(services: Services, image: Path, key: str | None) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node missing: run bash scripts/setup_env.sh (installs Debian's nodejs)"
    assert (NODE_MODULES / "@grpc" / "grpc-js").is_dir(), "run bash scripts/setup_env.sh"
    env = {k: v for k, v in os.environ.items() if k != "TRANSTIC_API_KEY"}
    env["NODE_PATH"] = str(NODE_MODULES)  # where setup_env.sh put the npm packages
    if key is not None:
        env["TRANSTIC_API_KEY"] = key
    args = [
        node, str(CLIENT),
        "--encoder", services.encoder.target,
        "--analytics", services.analytics.target,
        "--image", str(image),
        "--task", "classification",
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def test_node_client_encodes_and_analyses(services: Services, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    image.write_bytes(png(HEIGHT, WIDTH, seed=3))
    done = run_node(services, image, API_KEY)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)

    assert out["encoder"]["service"] == "encoder"
    assert out["analytics"]["service"] == "analytics"
    assert "classification" in out["encoder"]["ready_tasks"]
    assert "classification" in out["analytics"]["ready_tasks"]

    encoded = out["encoded"]
    assert encoded["bytes"] > 0 and encoded["bits_per_pixel"] > 0
    assert (encoded["height"], encoded["width"]) == (HEIGHT, WIDTH)
    assert (encoded["task"], encoded["quality"]) == ("classification", 1)

    analysis = out["analysis"]
    assert analysis["task"] == "classification"
    assert (analysis["height"], analysis["width"]) == (HEIGHT, WIDTH)
    assert analysis["bits_per_pixel"] == pytest.approx(encoded["bits_per_pixel"], rel=1e-6)
    labels = analysis["labels"]
    assert labels and all(0.0 <= label["score"] <= 1.0 and label["name"] for label in labels)
    # The analytics side decoded with the weights the encoder used, and says so.
    codecs = {m["fingerprint"]: m["id"] for m in out["analytics"]["models"] if m["kind"] == "codec"}
    assert codecs.get(encoded["fingerprint"]) == analysis["codec_id"]
    # One id scheme: both services call the one weights file by the same name.
    assert encoded["codec_id"] == analysis["codec_id"] == "tiny"  # tiny.pth
    encoder_ids = {m["fingerprint"]: m["id"] for m in out["encoder"]["models"]}
    assert encoder_ids[encoded["fingerprint"]] == analysis["codec_id"]


@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef-wrong"])
def test_node_client_without_a_valid_key_is_refused(
    services: Services, tmp_path: Path, key: str | None
) -> None:
    image = tmp_path / "frame.png"
    image.write_bytes(png(HEIGHT, WIDTH, seed=4))
    done = run_node(services, image, key)
    assert done.returncode == 1
    assert "GetInfo: UNAUTHENTICATED (16)" in done.stderr, done.stderr
    assert done.stdout == ""


def reflect(target: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    """One request on reflection v1 (what grpcurl tries first), with the API key."""
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(
            REFLECTION_V1,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        (reply,) = list(info(iter([request]), metadata=metadata, timeout=30))
    return reply


@pytest.mark.parametrize(
    ("which", "service", "methods"),
    [
        ("encoder", "transtic.v1.Encoder", {"Encode", "GetInfo"}),
        ("analytics", "transtic.v1.Analytics", {"Analyze", "AnalyzeStream", "GetInfo"}),
    ],
)
def test_reflection_serves_the_contract_as_grpcurl_needs(
    services: Services, which: str, service: str, methods: set[str]
) -> None:
    """`grpcurl list` and `grpcurl describe` (docs/client.md) without proto files."""
    target = getattr(services, which).target
    listed = reflect(target, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {service, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names

    found = reflect(target, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in found.file_descriptor_response.file_descriptor_proto
    ]
    (contract,) = [f for f in files if f.package == "transtic.v1"]
    assert contract.name == "transtic/v1/api.proto"  # the path in proto/, as buf lays it out
    (described,) = [s for s in contract.service if f"transtic.v1.{s.name}" == service]
    assert {m.name for m in described.method} == methods


@pytest.mark.parametrize("which", ["encoder", "analytics"])
def test_health_only_port_of_the_real_process(services: Services, which: str) -> None:
    """What the kubelet's gRPC probe sees: SERVING without a key, and no API there."""
    target = f"127.0.0.1:{services.health_ports[which]}"
    assert grpc_health(target) == SERVING
    with grpc.insecure_channel(target) as channel:
        stub: Any = (
            api_pb2_grpc.EncoderStub(channel)
            if which == "encoder"
            else api_pb2_grpc.AnalyticsStub(channel)
        )
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetInfo(api_pb2.GetInfoRequest(), metadata=metadata, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
