"""docker-compose.yml read the way ``docker compose`` reads it, without Docker.

Interpolation of ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``
and ``$$`` (compose-spec "Interpolation"), the Dockerfile defaults a container starts
with (ENV, ENTRYPOINT, CMD, ARG), and the file matching of ``.dockerignore``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset_or_empty:
            return arg
        if op in (":?", "?") and unset_or_empty:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    return node


def load_compose(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file with variables interpolated from ``env`` (YAML anchors resolved)."""
    raw = yaml.safe_load(path.read_text())
    return dict(_walk(raw, env))


# -- Dockerfiles ---------------------------------------------------------------------------
def dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    return [str(v) for v in value]


def image_defaults(dockerfile: Path) -> dict[str, Any]:
    """What a container of this image starts with: env, entrypoint, cmd, base image."""
    steps = dockerfile_steps(dockerfile)
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    env: dict[str, str] = {}
    for word, rest in steps:
        if word == "ENV":
            for token in shlex.split(rest):
                name, _, value = token.partition("=")
                env[name] = value
    entrypoint = [_exec_form(rest) for word, rest in steps if word == "ENTRYPOINT"]
    cmd = [_exec_form(rest) for word, rest in steps if word == "CMD"]
    base = next(rest for word, rest in steps if word == "FROM")
    return {
        "env": env,
        "entrypoint": entrypoint[-1] if entrypoint else [],
        "cmd": cmd[-1] if cmd else [],
        "from": interpolate(base, args),
    }


# -- .dockerignore -------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    # A pattern naming a directory excludes everything below it.
    return re.compile(f"^{out}(?:/.*)?$")


def dockerignore_excludes(rules_text: str, path: str) -> bool:
    """Whether the build context leaves ``path`` out (the last matching rule decides)."""
    excluded = False
    for line in rules_text.splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        rule = rule.lstrip("!").strip().strip("/")
        if _pattern_regex(rule).match(path):
            excluded = not negate
    return excluded
