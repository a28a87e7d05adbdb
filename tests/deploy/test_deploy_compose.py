"""Compose as an operator runs it: valid against the compose-spec schema, offline by default,
monitoring independent of the services, secure defaults, pinned images, pinned weights."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_model import (
    ROOT,
    MissingVariable,
    dockerignore_excludes,
    image_defaults,
    load_compose,
)

from transtic.weights import default_registry

COMPOSE_FILES = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").glob("compose.*.yml"))]
ENV = {"TRANSTIC_GRAFANA_ADMIN_PASSWORD": "test-only-password"}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
OURS = ("transtic/",)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(ROOT / "docker-compose.yml", ENV)


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_compose_files_match_the_compose_spec_schema() -> None:
    assert len(COMPOSE_FILES) >= 4
    done = check_jsonschema(*COMPOSE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_mistake(tmp_path: Path) -> None:
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["analytics"]["healthcheck"]["retries"] = "often"
    broken["services"]["encoder"]["restart_policy"] = "always"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    done = check_jsonschema(path)
    assert done.returncode != 0 and "restart_policy" in done.stdout + done.stderr


def test_base_stack_needs_no_download(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        starts = [spec.get("entrypoint"), spec.get("command"), spec.get("environment")]
        assert "pull" not in str(starts) and "://" not in str(starts), name
    registry = default_registry()
    env = compose["services"]["analytics"]["environment"]
    names = {env["TRANSTIC_ANALYTICS_CODEC_CHECKPOINT"]}
    names |= set(yaml.safe_load(env["TRANSTIC_ANALYTICS_CODEC_CHECKPOINTS"]).values())
    for name in names:
        entry = registry.get(name)
        shipped = ROOT / "transtic" / "weights" / "data" / entry.filename
        assert shipped.is_file(), name
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() == entry.sha256
    # Only the demo's camera waits for a one-shot job (its generated frames).
    for name, spec in compose["services"].items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            if cond["condition"] == "service_completed_successfully":
                assert (name, dep) == ("camera", "demo-frames")


def test_images_carry_the_shipped_codecs() -> None:
    rules = (ROOT / ".dockerignore").read_text()
    shipped = sorted((ROOT / "transtic" / "weights" / "data").glob("*.pth.tar"))
    assert len(shipped) >= 4
    for path in shipped:
        assert not dockerignore_excludes(rules, path.relative_to(ROOT).as_posix()), path
    for other in ("runs/q1/final.pth.tar", "var/weights/cls_1.pth.tar", "model.pth", ".venv/x"):
        assert dockerignore_excludes(rules, other), other
    for service in ("analytics", "encoder"):
        steps = (ROOT / "deploy" / f"{service}.Dockerfile").read_text()
        assert "COPY transtic ./transtic" in steps


def test_monitoring_starts_independently(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert not services["prometheus"].get("depends_on")
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_started"}}


def test_demo_profile_generates_its_frames(compose: dict[str, Any]) -> None:
    services = compose["services"]
    job, camera = services["demo-frames"], services["camera"]
    assert job["profiles"] == camera["profiles"] == ["demo"]
    assert job["entrypoint"] == ["python", "-m", "services.encoder.testcard"]
    (volume,) = [v for v in job["volumes"] if v.endswith(":/frames")]
    source = volume.split(":")[0]
    assert f"{source}:/frames:ro" in camera["volumes"] and source in compose["volumes"]
    assert camera["environment"]["TRANSTIC_ENCODER_SOURCE"] == "/frames"


def test_secure_defaults(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == ENV["TRANSTIC_GRAFANA_ADMIN_PASSWORD"]
    with pytest.raises(MissingVariable, match="TRANSTIC_GRAFANA_ADMIN_PASSWORD"):
        load_compose(ROOT / "docker-compose.yml", {})
    for name, spec in compose["services"].items():
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    opened = load_compose(ROOT / "docker-compose.yml", {**ENV, "TRANSTIC_BIND_ADDRESS": "0.0.0.0"})
    assert opened["services"]["analytics"]["ports"][0] == "0.0.0.0:8080:8080"


def test_images_are_pinned_by_digest(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if not spec["image"].startswith(OURS):
            assert DIGEST.search(spec["image"]), name
    for service in ("analytics", "encoder"):
        base = image_defaults(ROOT / "deploy" / f"{service}.Dockerfile")["from"]
        assert base.startswith("python:3.11-slim") and DIGEST.search(base), base


def test_analytics_image_has_one_cuda_stack() -> None:
    text = (ROOT / "deploy" / "analytics.Dockerfile").read_text()
    assert "nvidia/cuda" not in text
    # apt-get only brings a compiler for the kernel build, never a second CUDA stack
    assert not re.search(r"apt-get install[^&]*(cuda|nvidia|cudnn)", text)
    assert "--index-url" not in text and "download.pytorch.org" not in text  # PyPI's CUDA build
    assert "580" in text  # the minimum driver is documented


@pytest.mark.parametrize("service", ["analytics", "encoder"])
def test_images_install_the_lock_then_the_project_without_resolving(service: str) -> None:
    text = re.sub(r"\\\n", " ", (ROOT / "deploy" / f"{service}.Dockerfile").read_text())
    installs = re.findall(r"^RUN (pip install .*)$", text, re.M)
    assert installs == [
        "pip install --require-hashes -r requirements/services.lock",
        "pip install --no-deps --no-build-isolation .",
    ]
    assert "COPY requirements/services.lock ./requirements/" in text
    rules = (ROOT / ".dockerignore").read_text()
    assert not dockerignore_excludes(rules, "requirements/services.lock")


def test_postgres_profile_is_optional(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["profiles"] == ["postgres"]
    dependency = services["analytics"]["depends_on"]["postgres"]
    assert dependency == {"condition": "service_healthy", "required": False}
    assert services["analytics"]["environment"]["TRANSTIC_ANALYTICS_DB_URL"] == ""
    with_db = load_compose(
        ROOT / "docker-compose.yml",
        {**ENV, "TRANSTIC_DB_URL": "postgresql://transtic@postgres:5432/transtic"},
    )
    from services.analytics.settings import Settings

    url = with_db["services"]["analytics"]["environment"]["TRANSTIC_ANALYTICS_DB_URL"]
    assert Settings(db_url=url).db_url == url


def test_release_weights_override_pins_what_it_pulls() -> None:
    override = load_compose(ROOT / "deploy" / "compose.release-weights.yml", ENV)
    job = override["services"]["weights"]
    assert job["entrypoint"] == ["sh", "/opt/transtic/pull-release-weights.sh"]
    mounted = {v.split(":")[0] for v in job["volumes"] if isinstance(v, str)}
    assert all((ROOT / m).is_file() for m in mounted) and len(mounted) == 2
    registry = default_registry()
    for name in job["command"]:
        assert registry.get(name).url is not None  # the paper's release files
    for service in ("analytics", "encoder"):
        spec = override["services"][service]
        assert spec["depends_on"]["weights"]["condition"] == "service_completed_successfully"


# -- the pinning script, run for real (files already in the volume: no network needed) --------
@pytest.fixture
def weights_volume(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    volume = tmp_path / "weights"
    volume.mkdir()
    for q in (1, 2):
        (volume / registry_filename(f"transtic_cls_q{q}")).write_bytes(os.urandom(64))
    env = {
        **os.environ,
        "WEIGHTS_DIR": str(volume),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
    }
    return volume, env


def registry_filename(name: str) -> str:
    return default_registry().get(name).filename


def pull(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = ROOT / "deploy" / "weights" / "pull-release-weights.sh"
    names = ["transtic_cls_q1", "transtic_cls_q2"]
    return subprocess.run(
        ["sh", str(script), *names], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_weights_are_recorded_on_first_pull_and_verified_after(
    weights_volume: tuple[Path, dict[str, str]],
) -> None:
    volume, env = weights_volume
    first = pull(env)
    assert first.returncode == 0, first.stderr
    record = (volume / "SHA256SUMS").read_text()
    assert registry_filename("transtic_cls_q1") in record and "first pull" in first.stdout
    again = pull(env)
    assert again.returncode == 0 and "recorded on the first pull" in again.stdout
    (volume / registry_filename("transtic_cls_q2")).write_bytes(b"tampered")
    tampered = pull(env)
    assert tampered.returncode != 0, tampered.stdout


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_supplied_pins_win(weights_volume: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    volume, env = weights_volume
    pins = tmp_path / "pins.sha256"
    lines = [
        f"{hashlib.sha256((volume / f).read_bytes()).hexdigest()}  {f}"
        for f in (registry_filename("transtic_cls_q1"), registry_filename("transtic_cls_q2"))
    ]
    pins.write_text("# pinned by the operator\n" + "\n".join(lines) + "\n")
    env["PINS_FILE"] = str(pins)
    ok = pull(env)
    assert ok.returncode == 0 and "pinned digests" in ok.stdout, ok.stderr
    pins.write_text(lines[0] + "\n" + "0" * 64 + lines[1][64:] + "\n")
    assert pull(env).returncode != 0
    shipped_pins = (ROOT / "deploy" / "weights" / "release-weights.sha256").read_text()
    assert all(line.startswith("#") for line in shipped_pins.splitlines() if line.strip())


@pytest.mark.parametrize("service", ["analytics", "encoder"])
def test_images_ship_native_kernels_for_every_x86_level(service: str, tmp_path: Path) -> None:
    """The Dockerfile's kernel step, run here as written (into a temp dir), builds what the
    service then finds through its kernel_cache_dir without any compiler at run time."""
    import shlex
    import subprocess
    import sys

    from transtic.kernels import build

    if build.compiler() is None:
        pytest.skip("no C++ compiler here")
    text = re.sub(r"\\\n", " ", (ROOT / "deploy" / f"{service}.Dockerfile").read_text())
    (step,) = [c.strip() for c in text.split("&&") if "transtic.kernels build" in c]
    argv = shlex.split(step)
    target = argv[argv.index("--cache-dir") + 1]
    assert f"TRANSTIC_{service.upper()}_KERNEL_CACHE_DIR={target}" in text
    argv[argv.index("--cache-dir") + 1] = str(tmp_path)
    assert argv[:3] == ["python", "-m", "transtic.kernels"]
    subprocess.run([sys.executable, *argv[1:]], check=True, cwd=ROOT, timeout=300)
    for kernel in ("window_attention", "winograd_conv"):
        built = {p.name.split("-")[1] for p in tmp_path.glob(f"{kernel}-*.so")}
        assert built == {"avx512", "avx2", "default"}, kernel
