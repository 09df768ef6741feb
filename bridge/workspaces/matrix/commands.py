"""``relaydesk matrix registration`` and ``relaydesk dev-homeserver``, contributed to the relaydesk command
through the ``relaydesk.commands`` entry-point group (the engine's CLI never imports an adapter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

DEFAULT_REGISTRATION = Path("var/matrix/relaydesk-registration.yaml")


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
    """Add ``relaydesk matrix registration``."""
    matrix = sub.add_parser("matrix", help="Matrix workspace tools")
    matrix_sub = matrix.add_subparsers(dest="matrix_command", required=True)
    reg = matrix_sub.add_parser("registration", help="write the application-service registration file")
    reg.add_argument("--output", type=Path, default=DEFAULT_REGISTRATION)
    reg.add_argument("--url", default="http://127.0.0.1:8080", help="where the homeserver reaches relaydesk")
    reg.add_argument("--server-name", default="localhost")
    reg.add_argument("--prefix", default="relay_", help="localpart prefix of the customers' ghost users")
    reg.add_argument("--force", action="store_true")
    reg.set_defaults(func=_registration)


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
