"""The ``synapse`` fixture: ONE real Synapse homeserver on loopback for the whole pytest session.

Registered for every test by ``pytest_plugins = ["tests.matrix_server"]`` in tests/conftest.py.
The homeserver loads an appservice registration whose ``url`` is ``http://127.0.0.1:<appservice_port>``:
a port reserved for the relaydesk under test (or a test's own receiver) to listen on. Nothing listens
there unless a test starts something; while nothing does, Synapse queues the appservice's transactions
and retries with a growing back-off (2 s, 4 s, ... 512 s). ``POST /_matrix/client/v1/appservice/{id}/ping``
with the as_token (answered by the appservice) makes Synapse send the queue at once.

Without Synapse installed the tests that use the fixture are skipped, or fail under
RELAYDESK_REQUIRE_SERVICES=1 (as CI runs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.workspaces.matrix.devserver import (
    DevHomeserver,
    DevHomeserverError,
    Registration,
    SynapseNotInstalled,
    free_port,
    require_synapse,
    write_registration,
)

SERVER_NAME = "localhost"
AGENT_LOCALPART = "agent"


@dataclass(frozen=True)
class SynapseInfo:
    """What a test needs to talk to the session's homeserver."""

    base_url: str
    server_name: str
    registration: Registration
    appservice_port: int
    agent_user_id: str
    agent_password: str
    data_dir: Path
    server: DevHomeserver

    @property
    def appservice_url(self) -> str:
        """Where Synapse pushes transactions: ``http://127.0.0.1:<appservice_port>``."""
        return f"http://127.0.0.1:{self.appservice_port}"

    @property
    def registration_path(self) -> Path:
        """The registration file Synapse loaded (for the matrix workspace's ``registration`` setting)."""
        return self.registration.path

    def matrix_plugin_yaml(self, *, agents: str | None = None) -> str:
        """The plugins.yaml entry (``  - matrix: ...``) of the appservice workspace on this homeserver.

        ``agents`` replaces the agents line's value (YAML), e.g. ``'[]\n        space: "!id"'``.
        """
        return f"""
  - matrix:
      use: "bridge.workspaces.matrix.appservice:MatrixWorkspace"
      config:
        homeserver: "{self.base_url}"
        server_name: "{self.server_name}"
        registration: "{self.registration_path}"
        agents: {agents if agents is not None else f'["{self.agent_user_id}"]'}"""


def _unavailable(reason: str) -> None:
    """Skip, or fail under RELAYDESK_REQUIRE_SERVICES=1 (the pattern of tests/services.py)."""
    if os.environ.get("RELAYDESK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"RELAYDESK_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_synapse_for_tests() -> None:
    """For a test that starts its own homeserver: skip (or fail, when required) without Synapse."""
    try:
        require_synapse()
    except SynapseNotInstalled as exc:
        _unavailable(str(exc))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def synapse() -> AsyncIterator[SynapseInfo]:
    """Start one Synapse for the session (in a temporary directory, removed afterwards)."""
    root = Path(tempfile.mkdtemp(prefix="relaydesk-synapse-"))
    appservice_port = free_port()
    registration = write_registration(
        root / "relaydesk-registration.yaml",
        url=f"http://127.0.0.1:{appservice_port}",
        server_name=SERVER_NAME,
    )
    agent_password = secrets.token_urlsafe(12)
    server = DevHomeserver(
        root / "synapse",
        server_name=SERVER_NAME,
        registrations=[registration.path],
        agents=[(AGENT_LOCALPART, agent_password)],
        presence=True,  # the handoff plugin's agents follow their presence (tests/plugins/handoff)
    )
    try:
        try:
            await server.start()
        except SynapseNotInstalled as exc:
            _unavailable(str(exc))
        except DevHomeserverError as exc:
            _unavailable(f"Synapse did not start: {exc}")
        yield SynapseInfo(
            base_url=server.base_url,
            server_name=server.server_name,
            registration=registration,
            appservice_port=appservice_port,
            agent_user_id=server.user_id(AGENT_LOCALPART),
            agent_password=agent_password,
            data_dir=server.data_dir,
            server=server,
        )
    finally:
        await server.stop()
        shutil.rmtree(root, ignore_errors=True)
