"""docker-compose.yml "run" without Docker: our services' containers as local processes.

Each of our services (images ``transtic/*``) starts with what its container would get:
the image's ENTRYPOINT/CMD and ENV from its Dockerfile, then the compose ``entrypoint``,
``command`` and ``environment`` (interpolated as compose does), from the repository
checkout (the image's /app). Compose's network is replaced by 127.0.0.1: service names
and container ports become 127.0.0.1 and free ports, volumes become folders. The
compose healthchecks decide readiness, then the demo profile's jobs run: the test-card
generator and the camera, whose frames must reach analytics and be stored. Wrong
commands, env names, ports, paths or healthchecks fail here, which static checks miss.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from compose_model import ROOT, image_defaults, load_compose

pytestmark = pytest.mark.integration

ENV = {"TRANSTIC_GRAFANA_ADMIN_PASSWORD": "test-only-password"}
READY_TIMEOUT_S = 240.0
CAMERA_TIMEOUT_S = 420.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Host:
    """The compose project mapped onto this machine: ports, hostnames and volumes."""

    def __init__(self, compose: dict[str, Any], work: Path) -> None:
        self.compose = compose
        self.work = work
        self.names = set(compose["services"]) | {"localhost"}
        self.ports: dict[int, int] = {}
        for spec in compose["services"].values():
            if not spec["image"].startswith("transtic/"):
                continue
            for port in spec.get("ports", []):
                self.ports.setdefault(int(str(port).rsplit(":", 1)[1]), free_port())
            for key, value in (spec.get("environment") or {}).items():
                if key.endswith("_PORT") and str(value).isdigit():
                    self.ports.setdefault(int(value), free_port())

    def folder(self, name: str) -> Path:
        path = self.work / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mounts(self, spec: dict[str, Any], image_env: dict[str, str]) -> dict[str, Path]:
        """Container path -> local folder: the service's named volumes, and the image's own
        writable folders (HOME, the weights cache) as empty folders."""
        found: dict[str, Path] = {}
        for volume in spec.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            assert not source.startswith("."), "our services mount no host paths"
            found[target] = self.folder(source)
        for key in ("HOME", *[k for k in image_env if k.endswith("_DIR")]):
            if key in image_env and image_env[key] not in found:
                found.setdefault(image_env[key], self.folder(f"image{image_env[key]}"))
        return found

    def localize(self, text: str, mounts: dict[str, Path]) -> str:
        def address(match: re.Match[str]) -> str:
            host, port = match.group(1), int(match.group(2))
            if host in self.names or host in ("127.0.0.1", "0.0.0.0"):
                return f"127.0.0.1:{self.ports.get(port, port)}"
            return match.group(0)

        text = re.sub(r"\b([a-z0-9.-]+):(\d{2,5})\b", address, text)
        text = "127.0.0.1" if text == "0.0.0.0" else text
        for target in sorted(mounts, key=len, reverse=True):
            if text == target or text.startswith(target + "/"):
                return str(mounts[target]) + text[len(target) :]
        return text

    def container(self, name: str) -> tuple[list[str], dict[str, str]]:
        """The argv and environment compose would give service ``name``."""
        spec = self.compose["services"][name]
        dockerfile = (
            ROOT
            / self.compose["services"]["encoder" if "encoder" in spec["image"] else "analytics"][
                "build"
            ]["dockerfile"]
        )
        image = image_defaults(dockerfile)
        environment = {
            **image["env"],
            **{k: str(v) for k, v in spec.get("environment", {}).items()},
        }
        mounts = self.mounts(spec, environment)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSTIC_", "PG"))}
        for key, value in environment.items():
            if key.endswith("_PORT") and value.isdigit():
                value = str(self.ports.get(int(value), int(value)))
            env[key] = self.localize(value, mounts)
        env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        entrypoint = spec.get("entrypoint", image["entrypoint"])
        command = spec.get("command", image["cmd"] if "entrypoint" not in spec else [])
        argv = [self.localize(str(a), mounts) for a in [*entrypoint, *command]]
        return [sys.executable if a == "python" else a for a in argv], env

    def healthy(self, name: str) -> bool:
        test = self.compose["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        argv, env = self.container(name)
        probe = [self.localize(str(a), {}) for a in test[1:]]
        probe = [sys.executable if a == "python" else a for a in probe]
        try:
            done = subprocess.run(probe, env=env, cwd=ROOT, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0


class Container:
    def __init__(self, host: Host, name: str) -> None:
        self.name = name
        self.argv, self.env = host.container(name)
        self.log = host.work / f"{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def fail(self, what: str) -> AssertionError:
        tail = self.log.read_text(errors="replace")[-5000:]
        return AssertionError(f"{self.name}: {what}\n{' '.join(self.argv)}\n--- log ---\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_healthy(host: Host, container: Container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if container.proc.poll() is not None:
            raise container.fail(f"exited with {container.proc.returncode} before healthy")
        if host.healthy(container.name):
            return
        time.sleep(1.0)
    raise container.fail("compose healthcheck never passed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, dict[str, Container]]]:
    compose = load_compose(ROOT / "docker-compose.yml", ENV)
    host = Host(compose, tmp_path_factory.mktemp("compose"))
    running: dict[str, Container] = {}
    try:
        # Service order from depends_on: analytics and encoder need nothing (no weights job).
        for name in ("analytics", "encoder"):
            assert not [
                d
                for d in (compose["services"][name].get("depends_on") or {})
                if compose["services"][d].get("profiles") is None
            ], name
            running[name] = Container(host, name)
        for container in running.values():
            wait_healthy(host, container)
        yield host, running
    finally:
        for container in running.values():
            container.stop()


def test_services_come_up_and_are_scraped(stack: tuple[Host, dict[str, Container]]) -> None:
    host, _ = stack
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        if job["job_name"] not in ("analytics", "encoder"):
            continue
        (target,) = job["static_configs"][0]["targets"]
        url = f"http://{host.localize(target, {})}{job.get('metrics_path', '/metrics')}"
        reply = httpx.get(url, timeout=10)
        assert reply.status_code == 200 and "process_cpu_seconds_total" in reply.text, url
    ready = httpx.get(f"http://{host.localize('analytics:8080', {})}/metrics", timeout=10).text
    assert "transtic_analytics_model_ready 1.0" in ready


def test_demo_camera_frames_reach_analytics(stack: tuple[Host, dict[str, Container]]) -> None:
    host, _ = stack
    compose = host.compose
    frames_job = Container(host, "demo-frames")
    assert frames_job.proc.wait(120) == 0, frames_job.fail("test-card job failed")
    job_args = compose["services"]["demo-frames"]["command"]
    count = int(job_args[job_args.index("--count") + 1])
    camera_spec = compose["services"]["camera"]
    assert camera_spec["depends_on"]["analytics"]["condition"] == "service_healthy"
    camera = Container(host, "camera")
    metrics_port = camera_spec["environment"]["TRANSTIC_ENCODER_STREAM_METRICS_PORT"]
    scrape = f"http://{host.localize(f'camera:{metrics_port}', {})}/metrics"
    scraped = ""
    deadline = time.monotonic() + CAMERA_TIMEOUT_S
    while camera.proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            scraped = httpx.get(scrape, timeout=2).text or scraped
        time.sleep(0.3)
    camera.stop()
    assert camera.proc.returncode == 0, camera.fail("camera did not finish its stream")
    assert "transtic_stream_frames_sent_total" in scraped, "Prometheus could not scrape the camera"

    stream_id = camera_spec["environment"]["TRANSTIC_ENCODER_STREAM_ID"]
    base = f"http://{host.localize('analytics:8080', {})}"
    page = httpx.get(
        f"{base}/v1/streams/{stream_id}/frames", params={"limit": 1000}, timeout=10
    ).json()
    sequences = [f["sequence"] for f in page["frames"]]
    assert sorted(sequences) == list(range(count)), sequences
    for frame in page["frames"]:
        assert frame["task"] == "classification" and frame["result"]["labels"]
