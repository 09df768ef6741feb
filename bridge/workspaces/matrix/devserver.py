"""A throwaway Synapse homeserver on loopback, for ``relaydesk dev-homeserver`` and the test suite.

:class:`DevHomeserver` writes a ``homeserver.yaml`` into a data directory (SQLite database, media store,
signing key, log file, all inside it), runs Synapse as a child process of the current Python, waits until
the client API answers and creates the agent accounts through the shared-secret admin API. It is closed to
the world: one HTTP listener on 127.0.0.1 with the client (and admin) API only, no federation, no key
servers, no statistics, no URL previews, no presence; rate limits are relaxed so tests never wait.

The application service that relaydesk is to Synapse is described by a registration file:
:func:`write_registration` makes one (random ``as_token``/``hs_token``, an exclusive user namespace for the
customers' ghosts) and :func:`load_registration` reads it back for the Matrix workspace adapter.

Synapse itself is an optional dependency (``pip install 'relaydesk[demo]'``); everything here that needs
it raises :class:`SynapseNotInstalled` with that hint when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp
import yaml

__all__ = [
    "DevHomeserver",
    "DevHomeserverError",
    "Registration",
    "SynapseNotInstalled",
    "free_port",
    "load_registration",
    "require_synapse",
    "run_dev_homeserver",
    "synapse_available",
    "write_registration",
]

INSTALL_HINT = "pip install 'relaydesk[demo]'"
LOOPBACK = "127.0.0.1"

# A rate limit nobody reaches in a test or a demo.
_UNLIMITED = {"per_second": 10_000, "burst_count": 100_000}

# Run Synapse through a two-line bootstrap on Linux: ask the kernel to send SIGTERM to Synapse when the
# process that started it dies (PR_SET_PDEATHSIG = 1), so a killed test run or a crashed ``relaydesk
# dev-homeserver`` does not leave a homeserver behind. argv: parent pid, then Synapse's own arguments.
_LINUX_BOOTSTRAP = """\
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit("relaydesk dev homeserver: the parent process is gone")
sys.argv = ["synapse.app.homeserver", *sys.argv[2:]]
runpy.run_module("synapse.app.homeserver", run_name="__main__", alter_sys=True)
"""


class SynapseNotInstalled(RuntimeError):
    """Synapse (the ``matrix-synapse`` package) cannot be imported by this Python."""


class DevHomeserverError(RuntimeError):
    """The dev homeserver did not start, or an admin call to it failed."""


def synapse_available() -> bool:
    """True when the ``synapse`` package can be imported by this Python (without importing it)."""
    return importlib.util.find_spec("synapse") is not None


def require_synapse() -> None:
    """Raise :class:`SynapseNotInstalled` with the install hint unless Synapse is importable."""
    if not synapse_available():
        raise SynapseNotInstalled(
            f"the Matrix dev homeserver needs Synapse, which is not installed in {sys.prefix}: "
            f"run {INSTALL_HINT} (or '.[demo]' / '.[dev]' from a checkout)"
        )


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now (the OS picks it; it is free again once returned)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- application service registration ---------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """An application service registration, as Synapse reads it from ``app_service_config_files``.

    ``user_namespace`` is the exclusive regex of the ghosts' user ids, ``@{user_prefix}.*:{server_name}``.
    ``url`` is where Synapse pushes transactions (None: it pushes nothing).
    """

    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender_localpart: str
    user_prefix: str
    user_namespace: str
    server_name: str
    path: Path

    @property
    def sender_user_id(self) -> str:
        """The appservice's own user (the bot), e.g. ``@relaydesk:localhost``."""
        return f"@{self.sender_localpart}:{self.server_name}"

    def ghost_user_id(self, suffix: str) -> str:
        """The user id of a ghost in this namespace: ``@{user_prefix}{suffix}:{server_name}``."""
        return f"@{self.user_prefix}{suffix}:{self.server_name}"


def _user_regex(user_prefix: str, server_name: str) -> str:
    return f"@{re.escape(user_prefix)}.*:{re.escape(server_name)}"


_NAMESPACE_FORM = re.compile(r"\^?@(?P<prefix>(?:\\.|[^\\.*+?()\[\]{}|^$])*)\.[*+](?::(?P<server>.+?))?\$?")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def write_registration(
    path: str | os.PathLike[str],
    *,
    as_id: str = "relaydesk",
    url: str | None,
    sender_localpart: str = "relaydesk",
    user_prefix: str = "relay_",
    server_name: str,
) -> Registration:
    """Write a new registration file with random tokens (owner-only permissions) and return it.

    The ghosts' namespace ``@{user_prefix}.*:{server_name}`` is exclusive (no one else may register such
    a user) and the appservice is not rate-limited. An existing file at ``path`` is replaced.
    """
    if not user_prefix:
        raise ValueError("user_prefix must not be empty: the ghosts need a namespace of their own")
    if sender_localpart.startswith(user_prefix):
        raise ValueError(
            f"sender_localpart {sender_localpart!r} falls inside the ghosts' namespace {user_prefix!r}.*"
        )
    target = Path(path)
    registration = Registration(
        id=as_id,
        url=url,
        as_token=secrets.token_urlsafe(32),
        hs_token=secrets.token_urlsafe(32),
        sender_localpart=sender_localpart,
        user_prefix=user_prefix,
        user_namespace=_user_regex(user_prefix, server_name),
        server_name=server_name,
        path=target,
    )
    document = {
        "id": registration.id,
        "url": registration.url,
        "as_token": registration.as_token,
        "hs_token": registration.hs_token,
        "sender_localpart": registration.sender_localpart,
        "rate_limited": False,
        "receive_ephemeral": True,  # typing notifications, so the customer sees when an agent types
        "namespaces": {
            "users": [{"exclusive": True, "regex": registration.user_namespace}],
            "aliases": [],
            "rooms": [],
        },
    }
    header = (
        "# Application service registration of relaydesk (written by relaydesk).\n"
        "# Synapse loads it through app_service_config_files; relaydesk's matrix workspace reads the tokens.\n"
        "# It holds secrets: keep it private.\n"
    )
    _write_private(target, header + yaml.safe_dump(document, sort_keys=False))
    return registration


def load_registration(path: str | os.PathLike[str]) -> Registration:
    """Read a registration file (as written by :func:`write_registration` or by hand).

    The first user namespace must have the form ``@prefix.*:server`` (the server part may be missing,
    then ``server_name`` is empty). Raises ``ValueError`` naming the file and the field otherwise.
    """
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{source}: registration file not found") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a registration (expected a YAML mapping)")
    for field in ("id", "as_token", "hs_token", "sender_localpart"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise ValueError(f"{source}: {field} is missing or not a string")
    url = data.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"{source}: url must be a string or null")
    users = (data.get("namespaces") or {}).get("users") or []
    if not users or not isinstance(users[0], dict) or not isinstance(users[0].get("regex"), str):
        raise ValueError(f"{source}: namespaces.users needs one entry with a regex for the ghosts")
    regex = users[0]["regex"]
    match = _NAMESPACE_FORM.fullmatch(regex)
    if match is None:
        raise ValueError(f"{source}: namespaces.users[0].regex {regex!r} is not of the form @prefix.*:server")
    return Registration(
        id=data["id"],
        url=url,
        as_token=data["as_token"],
        hs_token=data["hs_token"],
        sender_localpart=data["sender_localpart"],
        user_prefix=_unescape(match["prefix"]),
        user_namespace=regex,
        server_name=_unescape(match["server"] or ""),
        path=source,
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# -- the homeserver ---------------------------------------------------------------------------------


class DevHomeserver:
    """One Synapse process on ``127.0.0.1:port`` whose whole state lives in ``data_dir``.

    ``port=0`` picks a free port at :meth:`start`. ``registrations`` are appservice registration files
    to load. ``agents`` are ``(localpart, password)`` accounts created (or checked, on a reused data_dir)
    at every start. A reused ``data_dir`` keeps users, rooms and messages; the secrets and signing key
    written there the first time are reused too, so access tokens stay valid across restarts.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        server_name: str = "localhost",
        registrations: Sequence[str | os.PathLike[str]] = (),
        agents: Sequence[tuple[str, str]] = (("agent", "password"),),
        start_timeout: float = 60.0,
        presence: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._port = port
        self._server_name = server_name
        self.registrations = [Path(p).resolve() for p in registrations]
        self.agents = list(agents)
        self.start_timeout = start_timeout
        self.presence = presence  # tests turn it on (the handoff plugin's presence); make run keeps it off
        self.startup_seconds: float | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._console: IO[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._shared_secret = ""

    # -- properties -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listener's port (0 until :meth:`start` picked one when none was given)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The client API base URL, e.g. ``http://127.0.0.1:8008``."""
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def server_name(self) -> str:
        """The Matrix server name: the part after ``:`` in user ids."""
        return self._server_name

    @property
    def pid(self) -> int | None:
        """The Synapse process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop` (and while Synapse is alive)."""
        return self._process is not None and self._process.returncode is None

    @property
    def config_path(self) -> Path:
        """The generated ``homeserver.yaml``."""
        return self.data_dir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        """Synapse's log file (WARNING and above)."""
        return self.data_dir / "homeserver.log"

    @property
    def console_path(self) -> Path:
        """What Synapse printed on stdout/stderr (start-up errors land here, before logging is set up)."""
        return self.data_dir / "console.log"

    def user_id(self, localpart: str) -> str:
        """``@localpart:server_name``."""
        return f"@{localpart}:{self._server_name}"

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Write the config, start Synapse, wait until the client API answers, create the agents.

        Raises :class:`SynapseNotInstalled` without Synapse, :class:`DevHomeserverError` (with the tail
        of Synapse's output) when it exits or does not answer within ``start_timeout`` seconds.
        """
        require_synapse()
        if self._process is not None:
            raise DevHomeserverError(f"the dev homeserver in {self.data_dir} is already started")
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "media_store").mkdir(exist_ok=True)
        settings = self._secrets()
        self._shared_secret = settings["registration_shared_secret"]
        self._ensure_signing_key()
        self._write_log_config()
        # A port picked here may be taken by someone else before Synapse binds it: pick another then.
        pick_port = self._port == 0
        attempts = 3 if pick_port else 1
        for attempt in range(1, attempts + 1):
            if pick_port:
                self._port = free_port()
            _write_private(self.config_path, yaml.safe_dump(self._config(settings), sort_keys=False))
            try:
                await self._launch()
                break
            except DevHomeserverError:
                if attempt == attempts or not self._port_was_taken():
                    raise
        try:
            for localpart, password in self.agents:
                await self.create_user(localpart, password)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    async def _launch(self) -> None:
        """Start the Synapse process and wait for its client API (stopped again if it does not come up)."""
        self._console = self.console_path.open("wb")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._command(),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches relaydesk, which stops Synapse in order
            )
        except BaseException:
            self._close_console()
            raise
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            await self._wait_until_up()
        except BaseException:
            await self.stop()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM Synapse, wait up to ``timeout`` seconds, then SIGKILL it. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._close_console()

    async def __aenter__(self) -> DevHomeserver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- accounts ---------------------------------------------------------------------------------

    async def create_user(self, localpart: str, password: str, admin: bool = False) -> str:
        """Create a user through the shared-secret admin API and return its user id.

        Idempotent: when the user exists already, the password is checked by a login (and that session
        logged out again); a different password raises :class:`DevHomeserverError`. ``admin`` only
        applies to a new user.
        """
        http = self._client()
        register_url = f"{self.base_url}/_synapse/admin/v1/register"
        async with http.get(register_url) as response:
            nonce = str((await self._json(response, "get a registration nonce"))["nonce"])
        mac = hmac.new(self._shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(nonce.encode())
        for part in (localpart, password, "admin" if admin else "notadmin"):
            mac.update(b"\x00")
            mac.update(part.encode())
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
            "inhibit_login": True,
        }
        async with http.post(register_url, json=body) as response:
            data = await response.json(content_type=None)
            if response.status == 200:
                return str(data["user_id"])
            if not (response.status == 400 and data.get("errcode") == "M_USER_IN_USE"):
                raise DevHomeserverError(
                    f"creating user {localpart!r} failed: HTTP {response.status} {data.get('errcode')} {data.get('error')}"
                )
        return await self._check_password(localpart, password)

    async def _check_password(self, localpart: str, password: str) -> str:
        http = self._client()
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "initial_device_display_name": "relaydesk dev-homeserver check",
        }
        async with http.post(f"{self.base_url}/_matrix/client/v3/login", json=login) as response:
            if response.status == 403:
                raise DevHomeserverError(
                    f"user {localpart!r} exists in {self.data_dir} with a different password "
                    "(use the old password, or remove the data directory to start afresh)"
                )
            data = await self._json(response, f"log in as {localpart!r}")
        headers = {"Authorization": f"Bearer {data['access_token']}"}
        async with http.post(f"{self.base_url}/_matrix/client/v3/logout", headers=headers, json={}):
            pass
        return str(data["user_id"])

    # -- internals --------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise DevHomeserverError("the dev homeserver is not started")
        return self._http

    @staticmethod
    async def _json(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
        data = await response.json(content_type=None)
        if response.status != 200 or not isinstance(data, dict):
            raise DevHomeserverError(f"{what} failed: HTTP {response.status} {data}")
        return data

    def _command(self) -> list[str]:
        synapse_args = ["-c", str(self.config_path)]
        if sys.platform.startswith("linux"):
            return [sys.executable, "-c", _LINUX_BOOTSTRAP, str(os.getpid()), *synapse_args]
        return [sys.executable, "-m", "synapse.app.homeserver", *synapse_args]

    async def _wait_until_up(self) -> None:
        assert self._process is not None
        http = self._client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        url = f"{self.base_url}/_matrix/client/versions"
        while True:
            if self._process.returncode is not None:
                raise DevHomeserverError(
                    f"Synapse exited with code {self._process.returncode} while starting.\n{self.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise DevHomeserverError(
                    f"Synapse did not answer on {url} within {self.start_timeout:.0f} s.\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Synapse's console output and log file, for error messages."""
        parts = []
        for path in (self.console_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8", errors="replace").strip()
                if text:
                    tail = "\n".join(text.splitlines()[-lines:])
                    parts.append(f"--- {path} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or f"(Synapse wrote nothing to {self.console_path} or {self.log_path})"

    def _port_was_taken(self) -> bool:
        """True when the last launch failed because its port was in use."""
        try:
            return "Address already in use" in self.console_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def _secrets(self) -> dict[str, str]:
        """The secrets of this data_dir, made once and reused (tokens and macaroons stay valid)."""
        path = self.data_dir / "secrets.json"
        with contextlib.suppress(FileNotFoundError, ValueError):
            stored = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(stored, dict) and all(isinstance(v, str) for v in stored.values()):
                return stored
        fresh = {
            name: secrets.token_urlsafe(32)
            for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret")
        }
        _write_private(path, json.dumps(fresh, indent=2))
        return fresh

    def _ensure_signing_key(self) -> None:
        """Write an ed25519 signing key in Synapse's format unless the data_dir has one."""
        path = self.data_dir / "signing.key"
        if path.exists():
            return
        from signedjson.key import generate_signing_key, write_signing_keys  # a dependency of Synapse

        key = generate_signing_key("a_" + secrets.token_hex(2))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write_signing_keys(handle, [key])

    def _write_log_config(self) -> None:
        config = {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(self.log_path),
                    "formatter": "plain",
                    "encoding": "utf-8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (self.data_dir / "log_config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def _config(self, settings: dict[str, str]) -> dict[str, Any]:
        """homeserver.yaml: loopback only, SQLite, no federation or outside calls, no practical rate limits."""
        data = self.data_dir
        return {
            "server_name": self._server_name,
            "public_baseurl": f"{self.base_url}/",
            "pid_file": str(data / "homeserver.pid"),
            "listeners": [
                {
                    "port": self._port,
                    "bind_addresses": [LOOPBACK],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}},
            "log_config": str(data / "log_config.yaml"),
            "media_store_path": str(data / "media_store"),
            "max_upload_size": "50M",
            "signing_key_path": str(data / "signing.key"),
            "registration_shared_secret": settings["registration_shared_secret"],
            "macaroon_secret_key": settings["macaroon_secret_key"],
            "form_secret": settings["form_secret"],
            "enable_registration": False,
            "app_service_config_files": [str(p) for p in self.registrations],
            # Nothing leaves this machine: no federation, no key servers, no stats, no previews.
            "federation_domain_whitelist": [],
            "allow_public_rooms_over_federation": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "report_stats": False,
            "url_preview_enabled": False,
            "enable_metrics": False,
            "presence": {"enabled": self.presence},
            "rc_message": _UNLIMITED,
            "rc_registration": _UNLIMITED,
            "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_joins_per_room": _UNLIMITED,
            "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
            "rc_room_creation": _UNLIMITED,
            "rc_admin_redaction": _UNLIMITED,
            "rc_3pid_validation": _UNLIMITED,
            "rc_third_party_invite": _UNLIMITED,
            "rc_media_create": _UNLIMITED,
            "rc_presence": {"per_user": _UNLIMITED},
            "rc_delayed_event_mgmt": _UNLIMITED,
            "rc_reports": _UNLIMITED,
            "rc_user_directory": _UNLIMITED,
            "rc_key_requests": _UNLIMITED,
        }


# -- relaydesk dev-homeserver ----------------------------------------------------------------------


def _synapse_version() -> str:
    try:
        return metadata.version("matrix-synapse")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def prepare_dev_files(
    data: Path, reg_path: Path, relaydesk_url: str, server_name: str
) -> tuple[Registration, str, str]:
    """The registration (written unless present), a note saying which, and the agent's password."""
    if reg_path.exists():
        registration = load_registration(reg_path)
        note = f"using the existing registration {reg_path}"
        if registration.url != relaydesk_url:
            note += (
                f" (it points Synapse at {registration.url}, not {relaydesk_url}: delete it to rewrite it)"
            )
    else:
        registration = write_registration(reg_path, url=relaydesk_url, server_name=server_name)
        note = f"wrote the registration {reg_path}"
    if registration.server_name and registration.server_name != server_name:
        raise DevHomeserverError(
            f"{reg_path} is for the server name {registration.server_name!r}, not {server_name!r}"
        )
    password_file = data / "agent-password"
    if password_file.exists():
        password = password_file.read_text(encoding="utf-8").strip()
    else:
        password = secrets.token_urlsafe(12)
        _write_private(password_file, password + "\n")
    return registration, note, password


async def run_dev_homeserver(
    data_dir: str | os.PathLike[str],
    port: int,
    registration_path: str | os.PathLike[str],
    relaydesk_url: str,
    *,
    server_name: str = "localhost",
) -> None:
    """What ``relaydesk dev-homeserver`` runs: a Synapse for trying relaydesk out, until cancelled.

    Writes the appservice registration (pushing to ``relaydesk_url``) unless ``registration_path``
    exists, starts Synapse on ``127.0.0.1:port`` with its state in ``data_dir``, creates the account
    ``agent`` (its random password is kept in ``data_dir/agent-password``) and prints how to log in.
    """
    require_synapse()
    data, reg_path = Path(data_dir), Path(registration_path)
    registration, note, password = prepare_dev_files(data, reg_path, relaydesk_url, server_name)
    server = DevHomeserver(
        data,
        port=port,
        server_name=server_name,
        registrations=[reg_path],
        agents=[("agent", password)],
    )
    await server.start()
    try:
        print(
            f"Synapse {_synapse_version()} is running at {server.base_url} "
            f"(server name {server.server_name!r}, started in {server.startup_seconds or 0:.1f} s, data in {server.data_dir}).\n"
            "\n"
            "Log in with any Matrix client (in Element: 'Sign in', then edit the homeserver):\n"
            f"  homeserver:  {server.base_url}\n"
            f"  user:        agent   ({server.user_id('agent')})\n"
            f"  password:    {password}\n"
            "\n"
            f"Application service {registration.id!r}: {note}.\n"
            f"  Synapse pushes room events to {registration.url}; point relaydesk's matrix workspace at\n"
            f"  homeserver {server.base_url} and this registration file.\n"
            f"Synapse's log: {server.log_path}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await server.stop()
