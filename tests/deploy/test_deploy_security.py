"""Security properties of the deployment files, checked statically.

Non-root containers with a fixed uid, nothing secret in images or in the repository,
TLS material and API keys only from secrets (compose ``secrets:``, Kubernetes Secret
volumes), and hardened pod and container security contexts.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kustomize import base_objects

from services.analytics.settings import Settings
from services.encoder.settings import EncoderSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
UID = 10001
SERVICES = ("encoder", "analytics")
SETTINGS = {"encoder": EncoderSettings, "analytics": Settings}
PREFIX = {"encoder": "TRANSTIC_ENCODER_", "analytics": "TRANSTIC_ANALYTICS_"}
SECRET_WORDS = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# Settings that hold file paths, never secrets themselves.
PATH_SETTINGS = re.compile(r"_(FILE|DIR|PATH)$")
KEY_SUFFIXES = (".pem", ".key", ".crt", ".p12", ".pfx", ".env")


def docs(path: Path) -> list[Any]:
    with path.open() as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def steps(service: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / f"{service}.Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("service", SERVICES)
def test_images_run_as_a_fixed_non_root_user(service: str) -> None:
    instructions = steps(service)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users[-1] == f"{UID}:{UID}"
    # The user is created with exactly that uid and gid.
    run = " ".join(rest for word, rest in instructions if word == "RUN")
    assert f"groupadd --gid {UID}" in run and f"useradd --uid {UID} --gid {UID}" in run


@pytest.mark.parametrize("service", SERVICES)
def test_images_bake_in_no_secrets(service: str) -> None:
    for word, rest in steps(service):
        if word in ("ENV", "ARG"):
            for name in re.findall(r"(\w+)=", rest) or rest.split()[:1]:
                assert not (SECRET_WORDS.search(name) and not PATH_SETTINGS.search(name)), name
        if word in ("COPY", "ADD"):
            *sources, _ = shlex.split(rest)
            copied = ("pyproject.toml", "requirements/services.lock", "transtic", "services")
            assert sources and all(s in copied for s in sources)
            assert not any(s.endswith(KEY_SUFFIXES) or "secret" in s for s in sources)


def test_dockerignore_keeps_keys_certificates_and_env_files_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"**/secrets", "**/*.pem", "**/*.key", "**/*.crt", "**/.env", "**/*.env"} <= ignored
    gitignored = (ROOT / ".gitignore").read_text().split()
    assert "/deploy/secrets/" in gitignored and "*.pem" in gitignored and "*.key" in gitignored


def test_no_key_material_is_tracked() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    tracked = [Path(p) for p in listed.split("\0") if p]
    assert tracked
    found = [p for p in tracked if p.suffix in KEY_SUFFIXES or "secrets" in p.parts]
    assert not found, f"key material in the repository: {found}"


# ---------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(docs(ROOT / "docker-compose.yml")[0])


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    return dict(docs(DEPLOY / "compose.secure.yml")[0])


def test_compose_containers_are_non_root_and_hardened(compose: dict[str, Any]) -> None:
    ours = {n: s for n, s in compose["services"].items() if "transtic/" in s.get("image", "")}
    assert set(ours) == {"demo-frames", "encoder", "analytics", "camera"}
    release = docs(DEPLOY / "compose.release-weights.yml")[0]
    ours["weights"] = release["services"]["weights"]
    for name, spec in ours.items():
        assert str(spec.get("user", f"{UID}")).split(":")[0] == str(UID), name
        assert spec["read_only"] is True and "/tmp" in spec["tmpfs"], name
        assert spec["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in spec["security_opt"], name
    for name, spec in compose["services"].items():
        assert str(spec.get("user", "")).split(":")[0] not in ("0", "root"), name


def test_compose_holds_no_secret_values(compose: dict[str, Any], secure: dict[str, Any]) -> None:
    for document in (compose, secure):
        for name, spec in document["services"].items():
            for key, value in (spec.get("environment") or {}).items():
                if key.startswith("TRANSTIC_") and SECRET_WORDS.search(key):
                    # Only file paths, into the secrets mount.
                    assert PATH_SETTINGS.search(key), f"{name}: {key}"
                    assert str(value).startswith("/run/secrets/"), f"{name}: {key}"


def test_secure_override_mounts_everything_it_names(secure: dict[str, Any]) -> None:
    declared = secure["secrets"]
    for spec in declared.values():
        assert spec["file"].startswith("./deploy/secrets/")
    for name, spec in secure["services"].items():
        mounted = set(spec["secrets"])
        assert mounted <= set(declared), name
        for key, value in spec["environment"].items():
            if str(value).startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in mounted, f"{name}: {key}"


def test_secure_override_turns_on_mutual_tls_and_keys(
    secure: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {n: s["environment"] for n, s in secure["services"].items()}
    for service in SERVICES:
        prefix = PREFIX[service]
        for field in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "api_keys_file"):
            assert f"{prefix}{field.upper()}" in env[service], (service, field)
    camera = env["camera"]
    for field in ("client_ca_file", "client_cert_file", "client_key_file", "client_api_key_file"):
        assert f"TRANSTIC_ENCODER_{field.upper()}" in camera
    for name, values in env.items():
        cls = EncoderSettings if name in ("encoder", "camera") else Settings
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))
        settings = cls()  # every name is a field, every value valid
        assert settings.model_fields_set
        for key in values:
            monkeypatch.delenv(key)


# ---------------------------------------------------------------- kubernetes


def k8s_objects() -> list[dict[str, Any]]:
    """The base's objects as ``kustomize build`` renders them."""
    return list(base_objects())


def deployment(name: str) -> dict[str, Any]:
    (found,) = [
        o for o in k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    ]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_pods_are_non_root_and_locked_down(service: str) -> None:
    pod = deployment(service)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == ctx["runAsGroup"] == ctx["fsGroup"] == UID
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        c = container["securityContext"]
        assert c["allowPrivilegeEscalation"] is False
        assert c["readOnlyRootFilesystem"] is True
        assert c["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in c or c["privileged"] is False


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_tls_and_keys_come_from_secret_volumes(service: str) -> None:
    pod = deployment(service)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret_volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert {s["secretName"] for s in secret_volumes.values()} == {
        f"{service}-tls",
        "transtic-api-keys",
    }
    mounts = {}
    for mount in container["volumeMounts"]:
        if mount["name"] in secret_volumes:
            assert mount["readOnly"] is True
            mounts[mount["mountPath"]] = secret_volumes[mount["name"]]
    for secret in secret_volumes.values():
        assert secret["defaultMode"] & 0o007 == 0  # never world-readable
    (config,) = [
        o
        for o in k8s_objects()
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{service}-config"
    ]
    prefix = PREFIX[service]
    for field in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "api_keys_file"):
        path = config["data"][f"{prefix}{field.upper()}"]
        directory, _, name = path.rpartition("/")
        assert directory in mounts, (field, path)
        assert name in {item["path"] for item in mounts[directory]["items"]}, (field, path)


def test_k8s_manifests_hold_no_secret_data() -> None:
    objects = k8s_objects()
    assert not [o for o in objects if o["kind"] == "Secret"]
    for config in (o for o in objects if o["kind"] == "ConfigMap"):
        for key, value in config["data"].items():
            if SECRET_WORDS.search(key):
                assert PATH_SETTINGS.search(key) and value.startswith("/etc/transtic/"), key
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert "BEGIN" not in text and "PRIVATE" not in text
