"""README's "Run it yourself" block, run as written: both services started with no
codec flags become ready, the curl gets a classification, the stream client streams.

The only change to the commands: the documented ports become free ones, so that the test
runs beside other services (every port in the block is a flag)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import free_port

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
DOCUMENTED_PORTS = (8080, 50051, 50052, 9102)


def run_it_yourself_block() -> str:
    section = README.read_text().split("## Run it yourself", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one shell block"
    return blocks[0]


def test_the_commands_use_every_documented_port_as_a_flag() -> None:
    block = run_it_yourself_block()
    for port in DOCUMENTED_PORTS:
        assert re.search(rf"\b{port}\b", block), port
    assert "python -m services.analytics " in block
    assert "python -m services.encoder serve " in block
    assert "--codec-checkpoint" not in block  # the shipped codecs are the default


def test_the_run_it_yourself_commands_work_as_written(tmp_path: Path) -> None:
    block = run_it_yourself_block()
    for port in DOCUMENTED_PORTS:
        block = re.sub(rf"\b{port}\b", str(free_port()), block)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRANSTIC_", "PYTHONWARN"))}
    # `python` is the project's interpreter, as in the activated .venv the README names.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = f"set -euo pipefail\n{block}wait\n"
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the services stop with it
    )
    try:
        output, _ = shell.communicate(timeout=900)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    assert shell.returncode == 0, output[-4000:]
    assert '"labels"' in output and "espresso" in output.lower(), output[-4000:]
    assert re.search(r'"quality":\s*3', output), output[-4000:]  # the shared default
    # The stream client's summary: the photo delivered and acknowledged.
    assert "1 acked, 0 duplicates, 0 refused, 0 unacked" in output, output[-4000:]
    # Nothing the user cannot act on: no dependency's deprecation warning at start.
    assert "FutureWarning" not in output
