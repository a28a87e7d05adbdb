"""The deployment files agree with the code: env names, ports, images, probes, metric names.

No Docker engine or cluster runs here, so consistency is what can be checked: every file
parses, and everything one file names (a setting, a port, an endpoint, a metric, a file to
COPY) exists where it points.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from compose_model import dockerfile_steps, image_defaults, load_compose
from kustomize import base_objects
from metric_labels import exposed_labels, unknown_labels

from services.encoder.cli import build_parser
from services.encoder.metrics import EncoderMetrics, StreamMetrics, exposed_names
from services.encoder.settings import EncoderSettings
from services.encoder.settings import env_names as encoder_env_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PREFIX = {"encoder": "TRANSTIC_ENCODER_", "analytics": "TRANSTIC_ANALYTICS_"}


def analytics_settings() -> Any:
    module = pytest.importorskip("services.analytics.settings")
    return module.Settings


def env_names(service: str) -> dict[str, str]:
    """Field -> env var of a service's one Settings class."""
    if service == "encoder":
        return encoder_env_names()
    settings = analytics_settings()
    return {name: f"{PREFIX[service]}{name.upper()}" for name in settings.model_fields}


def load_yaml_docs(path: Path) -> list[Any]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert len(load_yaml_docs(COMPOSE)) == 1
    # Interpolated as `docker compose` does, with the one variable it requires.
    return load_compose(COMPOSE, {"TRANSTIC_GRAFANA_ADMIN_PASSWORD": "test-only-password"})


def k8s_objects() -> Iterator[dict[str, Any]]:
    """The base's objects as ``kustomize build`` renders them."""
    yield from base_objects()


def k8s(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (compose["services"][name].get("environment") or {}).items()}


def container_ports(compose: dict[str, Any], name: str) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in compose["services"][name].get("ports", [])}


# ---------------------------------------------------------------- every file parses


def test_every_yaml_and_json_file_parses() -> None:
    yamls = [COMPOSE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]
    assert len(yamls) >= 9
    for path in yamls:
        assert load_yaml_docs(path), path
    jsons = list(DEPLOY.rglob("*.json"))
    assert jsons
    for path in jsons:
        json.loads(path.read_text())


# ---------------------------------------------------------------- compose


@pytest.mark.parametrize("service", ["encoder", "analytics", "camera"])
def test_compose_env_names_are_settings_fields(compose: dict[str, Any], service: str) -> None:
    kind = "encoder" if service == "camera" else service
    known = set(env_names(kind).values())
    env = service_env(compose, service)
    assert env, f"{service} sets no environment"
    unknown = {k for k in env if k.startswith("TRANSTIC_") and k not in known}
    assert not unknown, f"{service}: not settings fields: {unknown}"


def test_compose_env_values_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service, cls in (("encoder", EncoderSettings), ("camera", EncoderSettings),
                         ("analytics", analytics_settings())):  # fmt: skip
        for key, value in service_env(compose, service).items():
            monkeypatch.setenv(key, value)
        cls()  # raises on a value the service would refuse at start
        for key in service_env(compose, service):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("service", "port_fields"),
    [("encoder", ("grpc_port", "http_port")), ("analytics", ("grpc_port", "http_port"))],
)
def test_compose_ports_match_settings(
    compose: dict[str, Any], service: str, port_fields: tuple[str, ...]
) -> None:
    env, names = service_env(compose, service), env_names(service)
    ports = {int(env[names[field]]) for field in port_fields}
    assert container_ports(compose, service) == ports
    assert env[names["host"]] == "0.0.0.0"  # reachable from other containers


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("encoder", "analytics", "prometheus", "grafana"):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits on {dep} health"


def test_compose_healthchecks_use_real_endpoints(compose: dict[str, Any]) -> None:
    services = compose["services"]
    encoder_cmd = services["encoder"]["healthcheck"]["test"]
    assert encoder_cmd[1:4] == ["python", "-m", "services.encoder"]
    args = build_parser().parse_args(encoder_cmd[4:])  # the probe subcommand exists
    grpc_port = service_env(compose, "encoder")["TRANSTIC_ENCODER_GRPC_PORT"]
    assert args.command == "probe" and args.address.endswith(f":{grpc_port}")
    analytics_cmd = " ".join(services["analytics"]["healthcheck"]["test"])
    http_port = service_env(compose, "analytics")["TRANSTIC_ANALYTICS_HTTP_PORT"]
    assert f"127.0.0.1:{http_port}/readyz" in analytics_cmd
    assert "/readyz" in analytics_routes()


def test_camera_targets_the_analytics_grpc_port(compose: dict[str, Any]) -> None:
    target = service_env(compose, "camera")["TRANSTIC_ENCODER_TARGET"]
    host, port = target.rsplit(":", 1)
    assert host == "analytics"
    assert port == service_env(compose, "analytics")["TRANSTIC_ANALYTICS_GRPC_PORT"]


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("./"):
                source = volume.split(":", 1)[0]
                assert (ROOT / source).exists(), f"{name}: {source}"


# ---------------------------------------------------------------- prometheus and grafana


def test_prometheus_scrapes_compose_services_on_their_metrics_ports(
    compose: dict[str, Any],
) -> None:
    config = load_yaml_docs(DEPLOY / "prometheus" / "prometheus.yml")[0]
    metrics_port = {
        "encoder": service_env(compose, "encoder")["TRANSTIC_ENCODER_HTTP_PORT"],
        "analytics": service_env(compose, "analytics")["TRANSTIC_ANALYTICS_HTTP_PORT"],
        "camera": service_env(compose, "camera")["TRANSTIC_ENCODER_STREAM_METRICS_PORT"],
        "localhost": "9090",
    }
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"encoder", "analytics", "stream-client"} <= set(jobs)
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in metrics_port, target
                assert port == metrics_port[host], target
                if host != "localhost":
                    assert host in compose["services"]


def analytics_metric_names() -> set[str]:
    metrics = pytest.importorskip("services.analytics.metrics")
    return exposed_names(metrics.Metrics().registry)


def test_dashboard_queries_only_use_defined_metrics() -> None:
    known = (
        exposed_names(EncoderMetrics().registry)
        | exposed_names(StreamMetrics().registry)
        | analytics_metric_names()
    )
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "transtic.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\btranstic_[a-z0-9_]+", e)}
    assert not used - known, f"undefined metrics: {sorted(used - known)}"
    assert not REQUIRED_PANEL_METRICS - used


def test_dashboard_filters_by_model_with_labels_the_metrics_carry() -> None:
    metrics = pytest.importorskip("services.analytics.metrics")
    labels = exposed_labels(metrics.Metrics(), EncoderMetrics(), StreamMetrics())
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "transtic.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("task", "codec", "quality"):
        assert variables[name]["includeAll"] and variables[name]["multi"]
        assert name in variables[name]["definition"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for expr in exprs:
        assert not unknown_labels(expr, labels), expr
    # The request and error panels follow the chosen models.
    for metric in (
        "transtic_analytics_frames_total",
        "transtic_analytics_errors_total",
        "transtic_analytics_bits_per_pixel_bucket",
    ):
        filtered = [e for e in exprs if f'{metric}{{task=~"$task"' in e]
        assert filtered and all(
            'codec=~"$codec"' in e and 'quality=~"$quality"' in e for e in filtered
        )


# What the panels the operators asked for are built on.
REQUIRED_PANEL_METRICS = {
    "transtic_analytics_frames_total",
    "transtic_analytics_bits_per_pixel_bucket",
    "transtic_analytics_stage_seconds_bucket",
    "transtic_analytics_queue_depth",
    "transtic_analytics_batch_size_bucket",
    "transtic_analytics_errors_total",
    "transtic_encoder_frames_total",
    "transtic_encoder_encode_seconds_bucket",
    "transtic_stream_frames_sent_total",
    "transtic_stream_frames_acked_total",
    "transtic_stream_unacked_frames",
    "transtic_stream_achieved_bpp",
    "transtic_analytics_model_ready",
}


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus(
    compose: dict[str, Any],
) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = load_yaml_docs(provisioning / "datasources" / "prometheus.yml")[0]["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "transtic.json").read_text())
    # Every query goes through the dashboard's data-source variable (any Prometheus works);
    # the provisioned source is the default, which the variable starts on.
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {"${datasource}"}
    variable, *model_variables = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        source["type"],
    )
    # The model filters (task, codec, quality) read their values from the same source.
    assert {v["datasource"]["uid"] for v in model_variables} <= {"${datasource}"}
    assert source["isDefault"] is True
    provider = load_yaml_docs(provisioning / "dashboards" / "transtic.yml")[0]["providers"][0]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


# ---------------------------------------------------------------- dockerfiles


@pytest.mark.parametrize(
    ("service", "base"),
    [("encoder", "python:3.11-slim"), ("analytics", "python:3.11-slim")],
)
def test_dockerfiles(compose: dict[str, Any], service: str, base: str) -> None:
    path = DEPLOY / f"{service}.Dockerfile"
    assert compose["services"][service]["build"]["dockerfile"] == f"deploy/{service}.Dockerfile"
    steps = dockerfile_steps(path)
    assert image_defaults(path)["from"].startswith(base)
    for word, rest in steps:
        if word == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    exposed = {int(p) for word, rest in steps if word == "EXPOSE" for p in rest.split()}
    assert exposed == container_ports(compose, service)
    env_keys = {m for word, rest in steps if word == "ENV" for m in re.findall(r"(\w+)=", rest)}
    own = {k for k in env_keys if k.startswith("TRANSTIC_")}
    assert own <= set(env_names(service).values())
    entry = next(rest for word, rest in steps if word == "ENTRYPOINT")
    assert f"services.{service}" in entry


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert not {"transtic", "services", "pyproject.toml"} & set(ignored)


# ---------------------------------------------------------------- kubernetes


def test_images_agree_between_compose_and_k8s(compose: dict[str, Any]) -> None:
    for name in ("encoder", "analytics"):
        deployment = k8s("Deployment", name)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == compose["services"][name]["image"]


def test_k8s_config_maps_hold_only_settings_env_names() -> None:
    for name, service in (("encoder-config", "encoder"), ("analytics-config", "analytics")):
        data = k8s("ConfigMap", name)["data"]
        assert set(data) <= set(env_names(service).values()), name
        names = env_names(service)
        ports = {data[names[port]] for port in ("grpc_port", "http_port", "grpc_health_port")}
        deployment = k8s("Deployment", service)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"][0]["configMapRef"]["name"] == name
        assert {str(p["containerPort"]) for p in container["ports"]} == ports


def named_port(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def analytics_routes() -> set[str]:
    settings = analytics_settings()
    rest = pytest.importorskip("services.analytics.rest")
    # a runtime is only used by request handlers, never to list routes
    app = rest.create_app(settings(), runtime=SimpleNamespace())
    # Routes sit in included APIRouters, which app.routes does not flatten: the API
    # document lists every path that has a route.
    return set(app.openapi()["paths"])


def grpc_readiness_port(service: str, container: dict[str, Any], config_map: str) -> int:
    """Readiness is the kubelet's gRPC probe on the plaintext health-only port: the one
    the service opens (grpc_health_port), declared on the container, not the TLS port."""
    data = k8s("ConfigMap", config_map)["data"]
    port = int(data[env_names(service)["grpc_health_port"]])
    probe = container["readinessProbe"]["grpc"]
    assert probe["port"] == port and "service" not in probe  # "" = the whole server
    assert named_port(container, "grpc-health") == port
    assert port != int(data[env_names(service)["grpc_port"]])
    return port


def test_k8s_probes_hit_existing_endpoints() -> None:
    routes = analytics_routes()
    (analytics,) = k8s("Deployment", "analytics")["spec"]["template"]["spec"]["containers"]
    grpc_readiness_port("analytics", analytics, "analytics-config")
    assert analytics["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe"):
        get = analytics[probe]["httpGet"]
        assert get["path"] in routes
        assert named_port(analytics, get["port"]) == 8080
    (encoder,) = k8s("Deployment", "encoder")["spec"]["template"]["spec"]["containers"]
    grpc_readiness_port("encoder", encoder, "encoder-config")
    for probe in ("startupProbe", "livenessProbe"):
        get = encoder[probe]["httpGet"]
        assert get["path"] in ("/healthz", "/readyz")
        assert named_port(encoder, get["port"]) == 9102


def test_k8s_health_ports_stay_inside_the_pod() -> None:
    """Only the kubelet (always allowed from the node) reaches the plaintext health ports:
    no Service exposes them and no NetworkPolicy opens them."""
    health_ports = {50061, 50062}
    for obj in k8s_objects():
        if obj["kind"] == "Service":
            exposed = {p.get("targetPort") for p in obj["spec"]["ports"]}
            assert not exposed & (health_ports | {"grpc-health"}), obj["metadata"]["name"]
        if obj["kind"] == "NetworkPolicy":
            for rule in obj["spec"].get("ingress", []):
                assert not {p["port"] for p in rule.get("ports", [])} & health_ports


def test_k8s_services_select_their_deployments() -> None:
    services = [o for o in k8s_objects() if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"analytics", "analytics-grpc", "encoder"}
    for service in services:
        selector = service["spec"]["selector"]
        target = selector["app.kubernetes.io/name"]
        deployment = k8s("Deployment", target)
        assert deployment["spec"]["selector"]["matchLabels"] == selector
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    headless = k8s("Service", "analytics-grpc")
    assert headless["spec"]["clusterIP"] == "None"
    target = k8s("ConfigMap", "encoder-config")["data"]["TRANSTIC_ENCODER_TARGET"]
    assert target == "dns:///analytics-grpc.transtic.svc.cluster.local:50051"


def test_k8s_namespace_and_kustomization() -> None:
    namespaces = {o["metadata"].get("namespace") for o in k8s_objects() if o["kind"] != "Namespace"}
    assert namespaces == {k8s("Namespace", "transtic")["metadata"]["name"]}
    kustomization = load_yaml_docs(K8S / "base" / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    for deployment in (k8s("Deployment", "encoder"), k8s("Deployment", "analytics")):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
