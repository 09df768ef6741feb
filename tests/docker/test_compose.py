"""docker/: the compose file is valid Compose, and every name, file, variable and route it refers to exists."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot_core.plugin import Plugin
from tests.docker.stack import (
    DOCKER,
    EXAMPLE_ENV,
    ROOT,
    MissingVariable,
    compose_file,
    compose_schema,
    interpolate,
    proxied,
    public_paths,
    variables,
)

EXAMPLE = EXAMPLE_ENV


def validate(document: dict[str, Any]) -> list[str]:
    """The schema's complaints about ``document`` (empty: valid)."""
    validator = jsonschema.Draft201909Validator(compose_schema())
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)
    )


def test_the_compose_file_is_valid_compose_with_the_example_environment() -> None:
    assert validate(compose_file(EXAMPLE)) == []


def test_the_schema_check_is_not_vacuous() -> None:
    """The same validator refuses a misspelt key and a replica count that is not a number."""
    document = compose_file(EXAMPLE)
    broken = copy.deepcopy(document)
    broken["services"]["relaydesk"]["helthcheck"] = broken["services"]["relaydesk"].pop("healthcheck")
    assert any("helthcheck" in problem for problem in validate(broken))
    broken = copy.deepcopy(document)
    broken["services"]["relaydesk"]["deploy"]["replicas"] = "two"
    assert any("replicas" in problem for problem in validate(broken))


def test_required_variables_are_all_in_the_example_and_refused_when_missing() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    required = {name for name, op in variables(text).items() if op.endswith("?")}
    assert required == {"POSTGRES_PASSWORD", "RELAYDESK_DOMAIN", "MATRIX_SERVER_NAME"}
    assert required <= EXAMPLE.keys()
    without = {k: v for k, v in EXAMPLE.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(text, without)


def test_every_service_volume_network_and_file_named_exists() -> None:
    document = compose_file(EXAMPLE)
    services: dict[str, Any] = document["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            needed = service["depends_on"][dependency]["condition"]
            if needed == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no health check"
        for network in service.get("networks", []):
            assert network in document["networks"], f"{name}: unknown network {network}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in document["volumes"], f"{name}: undeclared volume {source}"
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT and (context / service["build"]["dockerfile"]).is_file()
    # every long-running service tells Docker whether it is healthy
    for name in ("postgres", "redis", "relaydesk", "synapse"):
        assert "healthcheck" in services[name], name
    assert services["relaydesk"]["deploy"]["replicas"] == int(EXAMPLE["RELAYDESK_WORKERS"])
    assert services["synapse"]["profiles"] == ["synapse"]


def test_redis_keeps_the_bus_across_restarts_and_postgres_commits_synchronously() -> None:
    services = compose_file(EXAMPLE)["services"]
    assert services["redis"]["command"][-4:] == ["--appendonly", "yes", "--appendfsync", "always"]
    assert "synchronous_commit=on" in services["postgres"]["command"]


def test_the_synapse_image_is_the_version_relaydesk_is_tested_against() -> None:
    image = compose_file(EXAMPLE)["services"]["synapse"]["image"]
    locked = re.search(r"^matrix-synapse==(\S+)", (ROOT / "requirements" / "run.txt").read_text(), re.M)
    assert locked and image.endswith(f":v{locked.group(1)}")


def test_caddy_proxies_every_public_route_and_nothing_internal() -> None:
    """Every route a relaydesk plugin serves is reachable through the proxy, except the Matrix appservice
    API (Synapse calls it on the internal network); /metrics and /healthz are never public."""
    patterns = public_paths()
    for entry_point in entry_points(group="relaydesk.plugins"):
        plugin = entry_point.load()
        assert issubclass(plugin, Plugin)
        for _attr, spec in plugin.route_specs():
            example = re.sub(r"\{[^}]*\}", "x", spec.path)
            if spec.path.startswith("/_matrix/"):
                assert not proxied(example, patterns), spec.path
            else:
                assert proxied(example, patterns), f"{entry_point.name}: {spec.path} not in Caddy's @public"
    for internal in ("/metrics", "/healthz", "/_matrix/app/v1/transactions/1"):
        assert not proxied(internal, patterns), internal
    trusted = (DOCKER / "plugins.yaml").read_text()
    caddy_address = compose_file(EXAMPLE)["services"]["caddy"]["networks"]["desk"]["ipv4_address"]
    assert f"trusted_proxies: [{caddy_address}]" in trusted


def test_the_image_configuration_passes_relaydesk_check(tmp_path: Path) -> None:
    """docker/plugins.yaml with the environment compose gives a worker: relaydesk check says OK."""
    worker = compose_file(EXAMPLE)["services"]["relaydesk"]
    env = {**os.environ, **EXAMPLE, **worker["environment"]}
    active = "\n".join(line.split("#")[0] for line in (DOCKER / "plugins.yaml").read_text().splitlines())
    unset = {
        name
        for name, op in variables(active).items()
        if op not in ("-", ":-") and name not in EXAMPLE and name not in worker["environment"]
    }
    assert not unset, f"docker/plugins.yaml needs {unset}: add them to docker/env.example"
    result = subprocess.run(
        [sys.executable, "-m", "bot_core", "check", str(DOCKER / "plugins.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "OK" in result.stdout and "Redis Streams" in result.stdout and "change-me" not in result.stdout
