"""The project's locks: every Python package each install set needs, pinned with hashes.

    python scripts/lock.py                          # add what pyproject asks for, keep other pins
    python scripts/lock.py --upgrade                # move every pin to the newest allowed release
    python scripts/lock.py --upgrade-package grpcio-tools   # move one package (repeatable)
    python scripts/lock.py --check                  # exit 1 where pyproject and the locks disagree

pyproject.toml keeps ranges (the wheel installs into other people's environments); the
locks are what this repository's own installs use, so every machine gets what was
tested: `scripts/setup_env.sh` (the README's two commands and CI) installs
``requirements/dev.lock`` and both container images install ``requirements/services.lock``,
each with ``pip install --require-hashes`` and then the project with ``--no-deps``.
The locks are written by uv's ``pip compile --generate-hashes`` from PyPI for CPython
3.11 on x86_64 Linux. After an upgrade that moves grpcio-tools, regenerate the stubs
(``python scripts/gen_protos.py``) and raise pyproject's grpcio/protobuf floors to what
they ask for; ``--check`` says so.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
# lock -> the extras of this project it installs (plus the build requirements, because
# the project is installed with --no-build-isolation from the locked setuptools, and pip)
LOCKS = {
    "requirements/dev.lock": ("services", "dev"),  # scripts/setup_env.sh: README, CI
    "requirements/services.lock": ("services",),  # deploy/*.Dockerfile
}
UV = "uv==0.13.10"
INDEX = "https://pypi.org/simple"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
# Marker values of that target, for deciding which of pyproject's requirements apply.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}
STUBS = ROOT / "services" / "generated" / "transtic" / "v1"


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[str, Pin]:
    """``{canonical name: Pin}`` from a pip requirements file with ``==`` pins and hashes."""
    pins: dict[str, Pin] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;]+)", head)
        if match is None:
            raise ValueError(f"{path.name}: not an exact pin: {line[:80]}")
        hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        pins[canonicalize_name(match[1])] = Pin(Version(match[2]), hashes)
    return pins


def install_set(extras: tuple[str, ...]) -> list[Requirement]:
    """The requirements pyproject names for the project with these extras (self-extras
    followed), plus the build system's, that apply on the lock's target."""
    data = tomllib.loads(PYPROJECT.read_text())
    project = data["project"]
    own = canonicalize_name(project["name"])
    found = [Requirement(r) for r in data["build-system"]["requires"]]
    found += [Requirement(r) for r in project["dependencies"]]
    queue, seen = list(extras), set()
    while queue:
        extra = queue.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in project["optional-dependencies"]:
            raise ValueError(f"pyproject.toml has no extra {extra!r}")
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == own:
                queue.extend(requirement.extras)
            else:
                found.append(requirement)
    return [r for r in found if r.marker is None or r.marker.evaluate({**TARGET, "extra": ""})]


def generated_versions() -> tuple[Version, Version]:
    """(grpcio, protobuf) versions the committed stubs ask for at import."""
    grpc_text = (STUBS / "api_pb2_grpc.py").read_text()
    grpc = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", grpc_text, re.M)
    pb_text = (STUBS / "api_pb2.py").read_text()
    pb = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", pb_text)
    if grpc is None or pb is None:
        raise ValueError("the generated stubs carry no version guard this check can read")
    return Version(grpc[1]), Version(".".join(pb.groups()))


def floor(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(bounds) if bounds else None


def problems() -> list[str]:
    """Every way pyproject, the locks and the generated stubs disagree (empty: agreed)."""
    found: list[str] = []
    grpc_made, protobuf_made = generated_versions()
    for name, extras in LOCKS.items():
        path = ROOT / name
        if not path.exists():
            found.append(f"{name}: missing (python scripts/lock.py writes it)")
            continue
        pins = read_lock(path)
        for requirement in install_set(extras):
            pin = pins.get(canonicalize_name(requirement.name))
            if pin is None:
                found.append(f"{name}: {requirement} is in pyproject but not in the lock")
            elif not requirement.specifier.contains(pin.version, prereleases=True):
                found.append(
                    f"{name}: pins {requirement.name}=={pin.version}, outside {requirement}"
                )
        found += [f"{name}: {n} has no hash" for n, pin in pins.items() if not pin.hashes]
        grpcio, protobuf = pins.get("grpcio"), pins.get("protobuf")
        if grpcio is not None and grpcio.version < grpc_made:
            found.append(f"{name}: grpcio=={grpcio.version}, but the stubs need >= {grpc_made}")
        if protobuf is not None and not (
            protobuf.version >= protobuf_made and protobuf.version.major <= protobuf_made.major + 1
        ):
            found.append(
                f"{name}: protobuf=={protobuf.version} cannot run stubs of {protobuf_made}"
            )
        tools = pins.get("grpcio-tools")
        if tools is not None and tools.version != grpc_made:
            found.append(
                f"{name}: pins grpcio-tools=={tools.version} but the stubs were generated by "
                f"{grpc_made}: run python scripts/gen_protos.py in an environment from the lock"
            )
    first, *others = (ROOT / name for name in LOCKS)
    if all(p.exists() for p in (first, *others)):
        tested = read_lock(first)
        for other in others:
            found += [
                f"{other.relative_to(ROOT)}: {n}=={pin.version}, the tests ran {tested[n].version}"
                for n, pin in read_lock(other).items()
                if n in tested and tested[n].version != pin.version
            ]
    # the wheel's ranges must not admit a runtime that the stubs refuse at import
    every_extra = tuple(tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"])
    for requirement in install_set(every_extra):
        made = {"grpcio": grpc_made, "protobuf": protobuf_made}.get(
            canonicalize_name(requirement.name)
        )
        low = floor(requirement)
        if made is not None and (low is None or low < made):
            found.append(
                f"pyproject.toml: {requirement} admits versions the stubs refuse (< {made})"
            )
    return found


def compile_locks(upgrade: bool, upgrade_packages: list[str]) -> None:
    tools = ROOT / ".tools" / "uv"
    uv = tools / "bin" / "uv"
    if not uv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
        subprocess.run([tools / "bin" / "pip", "install", "--quiet", UV], check=True)
    build = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    with tempfile.TemporaryDirectory() as tmp:
        build_in = Path(tmp) / "build-system.in"
        # pip too: the installs run the locked pip, not whatever the venv came with
        build_in.write_text("\n".join([*build, "pip"]) + "\n")
        for index, (name, extras) in enumerate(LOCKS.items()):
            # the images get the versions the tests ran: the first (README/CI) lock constrains
            # every later one
            constrain = ["--constraint", next(iter(LOCKS))] if index else []
            (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
            command = [
                str(uv), "pip", "compile", "pyproject.toml", str(build_in),
                *(a for extra in extras for a in ("--extra", extra)), *constrain,
                "--generate-hashes", "--index-url", INDEX,
                "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
                "--no-header", "--quiet", "-o", name,
                *(["--upgrade"] if upgrade else []),
                *(a for p in upgrade_packages for a in ("--upgrade-package", p)),
            ]  # fmt: skip
            subprocess.run(command, cwd=ROOT, check=True)
            body = (ROOT / name).read_text()
            (ROOT / name).write_text(
                f"# Written by scripts/lock.py (uv pip compile --generate-hashes) from\n"
                f"# pyproject.toml with extras {', '.join(extras)} and the build system, for\n"
                f"# CPython {PYTHON_VERSION} on {PLATFORM}. Do not edit: re-run the script.\n"
                + body.replace(f"{build_in}", "build-system requires")
            )
            print(f"wrote {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report disagreements")
    parser.add_argument("--upgrade", action="store_true", help="newest releases pyproject allows")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    if not args.check:
        compile_locks(args.upgrade, args.upgrade_package)
    found = problems()
    for line in found:
        print(line)
    if not found:
        print("pyproject.toml, the locks and the generated stubs agree")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
