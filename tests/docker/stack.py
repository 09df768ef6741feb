"""Reading docker/ the way Compose and Caddy would, for the stack's tests (no Docker engine needed)."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SCHEMA_DIR = Path(os.environ.get("RELAYDESK_COMPOSE_SCHEMA_DIR", ROOT / ".venv" / "compose-schema"))
SCHEMA_IN_WHEEL = "compose/config/compose_spec.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $
_REFERENCE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` whose variable is not set: Compose refuses to start, naming it."""


def env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of an env file (comments and blank lines skipped), as Compose reads them."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def variables(text: str) -> dict[str, str]:
    """Every variable a text refers to, with its operator (``""``, ``-``, ``:-``, ``?``, ``:?``)."""
    return {m["name"]: m["op"] or "" for m in _REFERENCE.finditer(text) if m["name"]}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution over the file's text."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        if name is None:
            return "$"
        value = env.get(name)
        if (op in (":-", ":?") and not value) or (op in ("-", "?") and value is None):
            if op.endswith("?"):
                raise MissingVariable(f"{name}: {arg}")
            return arg
        return value or ""

    return _REFERENCE.sub(one, text)


def compose_file(env: Mapping[str, str]) -> dict[str, Any]:
    """docker/compose.yaml as Compose sees it with ``env``: variables substituted, anchors merged."""
    loaded = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), env))
    assert isinstance(loaded, dict)
    return loaded


def compose_schema() -> dict[str, Any]:
    """The Compose specification's JSON schema, from the hash-pinned wheel ``make compose-schema`` downloads."""
    wheels = sorted(SCHEMA_DIR.glob("docker_compose-*.whl"))
    if not wheels:
        reason = f"the Compose schema is not downloaded ({SCHEMA_DIR}): run `make compose-schema`"
        if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        schema = json.loads(wheel.read(SCHEMA_IN_WHEEL))
    assert isinstance(schema, dict)
    return schema


def public_paths() -> list[str]:
    """The path patterns of the Caddyfile's ``@public`` matcher (what the proxy lets in)."""
    caddyfile = (DOCKER / "caddy" / "Caddyfile").read_text()
    match = re.search(r"^\s*@public\s+path\s+(.+)$", caddyfile, re.MULTILINE)
    assert match, "docker/caddy/Caddyfile has no '@public path ...' matcher"
    return match.group(1).split()


def proxied(path: str, patterns: list[str]) -> bool:
    """Whether Caddy's ``path`` matcher lets ``path`` through (a trailing ``*`` is a prefix match)."""
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in patterns)


EXAMPLE_ENV = env_file(DOCKER / "env.example")
"""docker/env.example's values: what a filled-in docker/.env looks like."""
