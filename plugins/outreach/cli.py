"""``relaydesk outreach ...``: preview a template for a customer, dry-run a campaign, show its counts.

Registered in the ``relaydesk.commands`` entry-point group. Each command reads plugins.yaml (the
outreach plugin's settings) and the desk's database; none of them sends anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from bot_core.api import (
    ConfigError,
    CustomerRecord,
    DeskConfig,
    desk_database,
    find_customer,
    get_customer,
    load_config,
    utcnow,
)
from plugins.outreach.config import OutreachConfig
from plugins.outreach.plugin import Outreach, OutreachPlugin, SendRequest, format_stats
from plugins.outreach.templates import MissingVariables, UnknownTemplate


def register(sub: Any) -> None:
    """Add ``relaydesk outreach`` and its subcommands to the command's subparsers."""
    outreach = sub.add_parser("outreach", help="outreach: preview templates, dry-run campaigns, counts")
    commands = outreach.add_subparsers(dest="outreach_command", required=True)

    preview = commands.add_parser("preview", help="show a template as a customer would get it")
    preview.add_argument("template")
    preview.add_argument(
        "customer", help="customer id, email, +phone, channel:user, or the shop's id (external_id attribute)"
    )
    preview.add_argument("--channel", help="the channel instance to preview for (default: theirs)")
    preview.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="an event variable")
    _common(preview)
    preview.set_defaults(func=cmd_preview)

    campaign = commands.add_parser("campaign", help="show who a campaign would reach (--dry-run)")
    campaign.add_argument("name")
    campaign.add_argument(
        "--dry-run", action="store_true", help="list who would get what, and who is skipped why"
    )
    _common(campaign)
    campaign.set_defaults(func=cmd_campaign)

    stats = commands.add_parser("stats", help="a campaign's counts per variant")
    stats.add_argument("name")
    _common(stats)
    stats.set_defaults(func=cmd_stats)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=Path("plugins.yaml"))
    parser.add_argument("--instance", help="the outreach plugin's instance name (when there are several)")


def _outreach(args: argparse.Namespace) -> tuple[DeskConfig, Outreach]:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    specs = [
        s
        for s in config.plugins
        if issubclass(s.plugin_class, OutreachPlugin) and args.instance in (None, s.instance_name)
    ]
    if len(specs) != 1:
        which = f"called '{args.instance}' " if args.instance else ""
        print(
            f"relaydesk: {args.config} has {len(specs)} outreach plugins {which}(give --instance)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    settings = specs[0].config
    assert isinstance(settings, OutreachConfig)
    return config, Outreach(settings, specs[0].instance_name, config.server.public_base_url)


async def lookup(text: str, external_id_attribute: str) -> CustomerRecord | None:
    """The customer ``text`` names: an id, an email, a +phone, ``channel:user``, or the shop's id."""
    text = text.strip()
    if text.isdigit():
        return await get_customer(int(text))
    if "@" in text:
        return await find_customer(email=text)
    if text.startswith("+"):
        return await find_customer(phone=text)
    if ":" in text:
        channel, _, user = text.partition(":")
        return await find_customer(channel=channel, external_user_id=user)
    return await find_customer(attribute=(external_id_attribute, text))


def cmd_preview(args: argparse.Namespace) -> int:
    """Print a template as the customer would read it, or what is missing."""
    config, outreach = _outreach(args)
    variables = dict(v.partition("=")[::2] for v in args.var)

    async def run() -> int:
        async with desk_database(config):
            customer = await lookup(args.customer, outreach.config.external_id_attribute)
            if customer is None:
                print(f"relaydesk: no customer {args.customer!r}", file=sys.stderr)
                return 1
            channel = args.channel or customer.last_channel or (customer.channels or ("",))[0]
            request = SendRequest("preview", customer.id, args.template, "service", "preview", variables)
            try:
                rendered = outreach.render(request, customer, channel)
            except UnknownTemplate:
                known = ", ".join(sorted(outreach.config.templates)) or "none"
                print(f"relaydesk: no template '{args.template}' (known: {known})", file=sys.stderr)
                return 1
            except MissingVariables as exc:
                print(f"NOT SENT: {exc} (pass them with --var NAME=VALUE or set the customer's attributes)")
                return 1
            print(
                f"To customer {customer.id} ({customer.name or 'no name'}) on {channel}, {rendered.language}:"
            )
            if rendered.approved is not None:
                params = ", ".join(rendered.approved.variables)
                print(
                    f"  approved template {rendered.approved.name} ({rendered.approved.language}) [{params}]"
                )
            print(rendered.text)
            return 0

    return asyncio.run(run())


def cmd_campaign(args: argparse.Namespace) -> int:
    """``--dry-run``: every customer of the segment, with what a run now would send or why not."""
    config, outreach = _outreach(args)
    campaign = outreach.config.campaign(args.name)
    if campaign is None:
        known = ", ".join(c.name for c in outreach.config.campaigns) or "none"
        print(f"relaydesk: no campaign '{args.name}' (known: {known})", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(
            f"Campaign '{campaign.name}' runs on its schedule ({campaign.cron}, {campaign.timezone}) in relaydesk; "
            "add --dry-run to see who it would reach now.",
        )
        return 2

    async def run() -> int:
        async with desk_database(config):
            plans = await outreach.plan_campaign(campaign, "dry-run", utcnow())
        sends = [d for _, _, d in plans if not d.skip]
        print(
            f"Campaign '{campaign.name}' (dry run, nothing sent): {len(sends)} would get it, "
            f"{len(plans) - len(sends)} skipped, of {len(plans)} in the segment."
        )
        for customer, _, decision in plans:
            print(decision.describe(customer.name))
        return 0

    return asyncio.run(run())


def cmd_stats(args: argparse.Namespace) -> int:
    """Print a campaign's counts per variant."""
    config, outreach = _outreach(args)

    async def run() -> int:
        async with desk_database(config):
            print(format_stats(args.name, await outreach.stats(args.name)))
            reasons = await outreach.skip_reasons(args.name)
        for reason, count in sorted(reasons.items()):
            print(f"  skipped, {reason}: {count}")
        return 0

    return asyncio.run(run())
