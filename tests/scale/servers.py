"""A PostgreSQL and a Redis of the test's own, on free ports in a temporary directory, so a test can kill,
crash and restart them (the shared servers of tests/services.py must stay up for everyone else).

Without the binaries the test is skipped with the reason; under RELAYDESK_REQUIRE_SERVICES=1 it fails.
initdb refuses to run as root: as root, the cluster belongs to the ``postgres`` user and its commands run
through ``runuser -u postgres --``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing(reason: str) -> None:
    """Skip the test for ``reason``, or fail it under RELAYDESK_REQUIRE_SERVICES=1."""
    if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _wait_port(port: int, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {timeout}s")


class OwnPostgres:
    """A PostgreSQL cluster in ``directory``, listening on 127.0.0.1:``port`` (trust authentication)."""

    def __init__(self, directory: Path) -> None:
        found = shutil.which("pg_ctl") or next(
            iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))), None
        )
        if found is None:
            missing(
                "PostgreSQL's server binaries (pg_ctl, initdb) are not installed (apt-get install postgresql)"
            )
        assert found is not None
        self.bin = Path(found).resolve().parent
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            if shutil.which("runuser") is None:
                missing("running as root without runuser: initdb cannot be run as another user")
            # pytest's temporary directories are root's alone (0700): the postgres user needs its own
            directory = Path(tempfile.mkdtemp(prefix="relaydesk-faults-pg-"))
            shutil.chown(directory, "postgres", "postgres")
        self.directory = directory
        self.data = directory / "pgdata"
        directory.mkdir(parents=True, exist_ok=True)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c max_connections=200"
            " -c fsync=off -c full_page_writes=off"  # the machine does not crash in these tests; processes do
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options, "-w", "start"
        )
        _wait_port(self.port, up=True)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shutdown) or ``immediate`` (as if it crashed: recovery at start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait_port(self.port, up=False)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast`` or ``immediate``) and start again on the same port and data."""
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Delete the cluster's files (the server must be stopped)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"{self.url}/{name}"


class OwnRedis:
    """A redis-server on 127.0.0.1:``port`` with its files in ``directory``; ``persist`` turns on an AOF
    fsync'd at every write (as docker/ and docs/production.md set it), off means no persistence at all."""

    def __init__(self, directory: Path) -> None:
        found = shutil.which("redis-server")
        if found is None:
            missing("redis-server is not installed (apt-get install redis-server)")
        assert found is not None
        self.binary = found
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.persist = True
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, persist: bool | None = None) -> None:
        """Start the server (with the given persistence, or as last time) and wait until it accepts connections."""
        if persist is not None:
            self.persist = persist
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--protected-mode", "no", "--logfile", str(self.directory / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, up=True)
        # the server accepts connections while it still loads the AOF: wait until it answers commands
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=10
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not answer PING")

    def kill(self) -> None:
        """SIGKILL the server (what was not persisted is gone)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        _wait_port(self.port, up=False)

    def wipe(self) -> None:
        """Delete the persisted files (a fresh server on the next start)."""
        for path in self.directory.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
