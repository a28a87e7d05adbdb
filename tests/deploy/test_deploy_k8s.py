"""Every Kubernetes overlay builds with kustomize and validates against the schemas of a
current Kubernetes release (kubernetes-validate, strict); what a fresh cluster needs is
there, and the components do what they say."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize import ROOT, base_objects, build, workspace

KUBERNETES_VERSION = "1.37.0"  # the newest release kubernetes-validate ships schemas for
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: checked by the tests below
COMBOS = {
    "test-gpu-release-weights": ["../../../weights", "../../components/gpu"],
    "test-postgres-monitoring": ["../../components/postgres", "../../components/monitoring"],
}


@pytest.fixture(scope="module")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    deploy = workspace(tmp_path_factory.mktemp("k8s"))
    folders = {
        p.parent.name: p.parent for p in (deploy / "k8s" / "overlays").glob("*/kustomization.yaml")
    }
    assert {"dev", "production"} <= set(folders)
    for name, components in COMBOS.items():
        folder = deploy / "k8s" / "overlays" / name
        folder.mkdir()
        spec = {"resources": ["../dev"], "components": components}
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        folders[name] = folder
    return {name: build(folder) for name, folder in sorted(folders.items())}


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield spec, container


def test_every_overlay_validates_against_current_kubernetes(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    problems = []
    for name, objects in overlays.items():
        for obj in objects:
            if obj["kind"] in OPERATOR_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_validator_catches_a_mistake(overlays: dict[str, list[dict[str, Any]]]) -> None:
    deployment = dict(find(overlays["dev"], "Deployment", "analytics"))
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_referenced_secret_and_config_map_is_created(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("dev", *COMBOS):
        objects = overlays[name]
        secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
        maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
        for spec, container in containers(objects):
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets, (name, volume)
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in maps, (name, volume)
                assert "persistentVolumeClaim" not in volume, (name, volume)
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in maps, (name, source)
    tls = find(overlays["dev"], "Secret", next(
        o["metadata"]["name"] for o in overlays["dev"]
        if o["kind"] == "Secret" and o["metadata"]["name"].startswith("analytics-tls")
    ))  # fmt: skip
    assert tls["type"] == "kubernetes.io/tls" and set(tls["data"]) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
    }


def test_base_needs_nothing_a_fresh_cluster_lacks() -> None:
    objects = list(base_objects())
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"PersistentVolumeClaim", "Secret", *OPERATOR_KINDS}
    text = yaml.safe_dump_all(objects)
    assert "nvidia.com/gpu" not in text and "ReadOnlyMany" not in text
    config = find(objects, "ConfigMap", "analytics-config")["data"]
    assert config["TRANSTIC_ANALYTICS_CODEC_CHECKPOINT"].startswith("transtic_small_")
    assert find(objects, "Deployment", "analytics")["spec"]["replicas"] == 1  # SQLite per pod


def test_gpu_component_schedules_onto_gpus(overlays: dict[str, list[dict[str, Any]]]) -> None:
    for name in ("production", "test-gpu-release-weights"):
        spec = pod_spec(overlays[name], "analytics")
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
            "tolerations"
        ]
        (analytics,) = spec["containers"]
        assert analytics["resources"]["limits"]["nvidia.com/gpu"] == "1"
        config = find(overlays[name], "ConfigMap", "analytics-config")["data"]
        assert config["TRANSTIC_ANALYTICS_DEVICE"] == "cuda"
        assert "nodeSelector" not in pod_spec(overlays[name], "encoder")


def test_scale_out_shares_postgres_and_scales_on_queue_depth(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    adapter = yaml.safe_load(
        (ROOT / "deploy/k8s/components/monitoring/prometheus-adapter-rules.yaml").read_text()
    )
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    for name in ("production", "test-postgres-monitoring"):
        objects = overlays[name]
        hpa = find(objects, "HorizontalPodAutoscaler", "analytics")
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in served
        assert metric["pods"]["metric"]["name"] == "transtic_analytics_queue_depth"
        assert find(objects, "Deployment", "analytics")["spec"]["replicas"] >= 2
        (analytics,) = pod_spec(objects, "analytics")["containers"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in analytics["env"]}
        assert env["TRANSTIC_ANALYTICS_DB_URL"] == {"name": "transtic-postgres", "key": "url"}
        assert env["PGPASSWORD"]["name"] == "transtic-postgres"
        assert find(objects, "PodDisruptionBudget", "analytics")["spec"] == {
            "minAvailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "analytics"}},
        }
    assert not [o for o in base_objects() if o["kind"] == "HorizontalPodAutoscaler"]


def test_disruption_budgets_and_network_policies_cover_every_pod() -> None:
    objects = list(base_objects())
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deny = find(objects, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]

        def selects(selector: dict[str, Any], labels: dict[str, str] = labels) -> bool:
            return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

        assert [b for b in budgets if selects(b["spec"]["selector"])], name
        own = [
            p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"])
        ]
        assert len(own) == 1, name
        allowed = {port["port"] for rule in own[0]["spec"]["ingress"] for port in rule["ports"]}
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # Every port but the plaintext health port, which only the kubelet (on the node,
        # always allowed) may reach.
        served = {p["containerPort"] for p in container["ports"] if p["name"] != "grpc-health"}
        assert served == allowed, name
        egress = [port["port"] for rule in own[0]["spec"]["egress"] for port in rule["ports"]]
        assert 53 in egress, name  # DNS, or nothing resolves
    analytics = find(objects, "NetworkPolicy", "analytics")["spec"]["egress"]
    assert 5432 in {port["port"] for rule in analytics for port in rule["ports"]}


def test_monitoring_scrapes_the_services_and_ships_the_alerts(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    objects = overlays["production"]
    services = [o for o in objects if o["kind"] == "Service"]
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        chosen = [
            s for s in services
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]  # fmt: skip
        assert len(chosen) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceMonitor"} == {
        "analytics",
        "encoder",
    }
    rule = find(objects, "PrometheusRule", "transtic-alerts")
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_release_weights_fill_a_pod_volume_with_pinned_files(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    objects = overlays["test-gpu-release-weights"]
    spec = pod_spec(objects, "analytics")
    (init,) = spec["initContainers"]
    assert init["command"] == ["sh", "/opt/transtic/pull-release-weights.sh"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["weights"]  # per pod: no ReadOnlyMany storage needed
    scripts = find(objects, "ConfigMap", volumes["release-weights"]["configMap"]["name"])["data"]
    folder = ROOT / "deploy" / "weights"
    assert scripts["pull-release-weights.sh"] == (folder / "pull-release-weights.sh").read_text()
    assert scripts["release-weights.sha256"] == (folder / "release-weights.sha256").read_text()
    config = find(objects, "ConfigMap", "analytics-config")["data"]
    assert set(yaml.safe_load(config["TRANSTIC_ANALYTICS_CODEC_CHECKPOINTS"]).values()) == set(
        init["args"]
    )
