"""``relaydesk matrix registration``, ``relaydesk matrix orphans`` and ``relaydesk dev-homeserver``,
contributed to the relaydesk command through the ``relaydesk.commands`` entry-point group (the
engine's CLI never imports an adapter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

DEFAULT_REGISTRATION = Path("var/matrix/relaydesk-registration.yaml")
DEFAULT_CONFIG = Path("plugins.yaml")


def _registration(args: argparse.Namespace) -> int:
    from bridge.workspaces.matrix.devserver import write_registration

    if args.output.exists() and not args.force:
        print(f"{args.output} exists; use --force to replace it (the homeserver must then reload it)")
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    reg = write_registration(args.output, url=args.url, server_name=args.server_name, user_prefix=args.prefix)
    print(f"Wrote {args.output}: appservice '{reg.id}', ghosts {reg.user_namespace}, pushes to {reg.url}.")
    print("Add it to the homeserver's app_service_config_files and restart the homeserver.")
    return 0


def _orphans(args: argparse.Namespace) -> int:
    return asyncio.run(orphans(args.config, args.workspace, close=args.close))


async def orphans(config_path: Path, workspace: str | None = None, *, close: bool = False) -> int:
    """List the orphan portal rooms of the appservice workspace in ``config_path`` (and close them).

    Returns the exit status: 0 when done, 1 when the workspace is not found or the homeserver fails.
    """
    from nio import AsyncClient

    from bot_core.api import ConfigError, StateStore, desk_database, load_config, workspace_rooms
    from bridge.workspaces.matrix.appservice import MatrixWorkspace
    from bridge.workspaces.matrix.devserver import LOOPBACK, load_registration
    from bridge.workspaces.matrix.errors import MatrixError
    from bridge.workspaces.matrix.orphans import close_orphan, find_orphans
    from bridge.workspaces.matrix.portal import STATE_SCOPE, intent_key

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    specs = [
        s
        for s in config.plugins
        if issubclass(s.plugin_class, MatrixWorkspace) and workspace in (None, s.instance_name)
    ]
    if not specs:
        print(f"{config_path}: no Matrix appservice workspace {workspace or ''}".rstrip(), file=sys.stderr)
        return 1
    spec = specs[0]
    settings = spec.config
    assert isinstance(settings, MatrixWorkspace.Config)
    registration = load_registration(settings.registration)
    homeserver = settings.homeserver
    if settings.dev_homeserver is not None:
        homeserver = f"http://{LOOPBACK}:{settings.dev_homeserver.port}"
    async with desk_database(config):
        stored = await workspace_rooms(spec.instance_name)
        intents = await StateStore(spec.instance_name, STATE_SCOPE).items()
    # a creation in progress: recorded for a customer who has no stored room yet (the next delivery adopts it)
    customers_with_rooms = {intent_key(c) for c in stored.values()}
    pending = {
        str(i.get("key"))
        for name, i in intents.items()
        if isinstance(i, dict) and name not in customers_with_rooms
    }
    client = AsyncClient(homeserver, f"@{registration.sender_localpart}:{settings.server_name}")
    client.user_id = client.user
    client.access_token = registration.as_token
    try:
        found = await find_orphans(client, set(stored), pending)
        print(f"{len(found)} orphan portal room(s) of workspace '{spec.instance_name}' on {homeserver}.")
        for orphan in found:
            print(f"  {orphan.room_id}  {orphan.name!r}  members: {', '.join(orphan.members) or 'none'}")
            if close:
                await close_orphan(client, orphan)
                print("    closed")
        if found and not close:
            print("Run again with --close to close them (everyone is removed, then relaydesk leaves).")
    except MatrixError as exc:
        print(f"relaydesk matrix orphans: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


def _dev_homeserver(args: argparse.Namespace) -> int:
    from bridge.workspaces.matrix.devserver import run_dev_homeserver

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_dev_homeserver(
                args.data_dir, args.port, args.registration, args.relaydesk_url, server_name=args.server_name
            )
        )
    return 0


def register_matrix(sub: Any) -> None:
    """Add ``relaydesk matrix registration`` and ``relaydesk matrix orphans``."""
    matrix = sub.add_parser("matrix", help="Matrix workspace tools")
    matrix_sub = matrix.add_subparsers(dest="matrix_command", required=True)
    reg = matrix_sub.add_parser("registration", help="write the application-service registration file")
    reg.add_argument("--output", type=Path, default=DEFAULT_REGISTRATION)
    reg.add_argument("--url", default="http://127.0.0.1:8080", help="where the homeserver reaches relaydesk")
    reg.add_argument("--server-name", default="localhost")
    reg.add_argument("--prefix", default="relay_", help="localpart prefix of the customers' ghost users")
    reg.add_argument("--force", action="store_true")
    reg.set_defaults(func=_registration)
    orph = matrix_sub.add_parser(
        "orphans", help="list portal rooms no conversation uses (left by crashes of older versions)"
    )
    orph.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="plugins.yaml to use")
    orph.add_argument("--workspace", help="the workspace instance (default: the first Matrix appservice one)")
    orph.add_argument("--close", action="store_true", help="close them: remove everyone, then leave")
    orph.set_defaults(func=_orphans)


def register_dev_homeserver(sub: Any) -> None:
    """Add ``relaydesk dev-homeserver``."""
    dev = sub.add_parser(
        "dev-homeserver", help="run a throwaway Synapse on loopback for trying relaydesk out"
    )
    dev.add_argument("--data-dir", type=Path, default=Path("var/matrix/synapse"))
    dev.add_argument("--port", type=int, default=8008)
    dev.add_argument("--registration", type=Path, default=DEFAULT_REGISTRATION)
    dev.add_argument("--relaydesk-url", default="http://127.0.0.1:8080")
    dev.add_argument("--server-name", default="localhost")
    dev.set_defaults(func=_dev_homeserver)
