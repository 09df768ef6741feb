"""A real Redis Cluster for the tests: three masters on loopback, started once per test session.

Each node is the machine's ``redis-server`` with ``--cluster-enabled yes`` on free ports (client and
cluster bus) in a temporary directory, without persistence; ``redis-cli --cluster create`` spreads the
16384 slots over them. Without ``redis-server`` (or ``redis-cli``) the tests that need the cluster are
skipped with the reason; under RELAYDESK_REQUIRE_SERVICES=1 they fail.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from tests.scale.servers import free_port, missing

MASTERS = 3


@dataclass
class RedisCluster:
    """The running cluster: its nodes' ports, and a URL of one node (the cluster client finds the rest)."""

    directory: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A ``redis://`` URL of the first node."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, server: str, cli: str) -> None:
        """Start the nodes, join them into one cluster and wait until every node reports it ``ok``."""
        for n in range(MASTERS):
            port, bus_port = free_port(), free_port()
            node_dir = self.directory / f"node{n}"
            node_dir.mkdir(parents=True)
            args = [server, "--port", str(port), "--cluster-port", str(bus_port), "--bind", "127.0.0.1"]
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--dir",
                str(node_dir),
            ]
            args += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
            args += ["--logfile", str(node_dir / "redis.log")]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            self._wait(cli, port, lambda out: out == "PONG", "ping")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout}{create.stderr}")
        for port in self.ports:
            self._wait(cli, port, lambda out: "cluster_state:ok" in out, "cluster", "info")

    @staticmethod
    def _wait(cli: str, port: int, ready: object, *command: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + 30
        out = ""
        while time.monotonic() < deadline:
            result = subprocess.run(
                [cli, "-p", str(port), *command], capture_output=True, text=True, timeout=10
            )
            out = result.stdout.strip()
            if ready(out):
                return
            time.sleep(0.05)
        raise TimeoutError(f"Redis node on port {port} not ready ({' '.join(command)}): {out}")

    def stop(self) -> None:
        """Kill every node and delete their files."""
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def node_of(client: ClusterClient, key: str) -> str:
    """The ``host:port`` of the master holding ``key``'s slot (the client must know the slots)."""
    node = client.get_node_from_key(key)
    assert node is not None, f"no node holds the slot of {key}"
    return str(node.name)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis Cluster on loopback for the whole session (skipped without redis-server)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        missing(
            "redis-server and redis-cli are needed for the Redis Cluster tests (apt-get install redis-server)"
        )
    assert server is not None and cli is not None
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start(server, cli)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The URL of one node of the session's Redis Cluster."""
    return redis_cluster.url
