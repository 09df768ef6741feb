"""A burst of new customers into the Slack workspace: drain time against the minimum Slack's tiers allow.

``--customers`` (500) new customers each write ``--messages`` (2) messages within what is "a minute" at
the chosen speed-up; relaydesk (SQLite, in-process bus, ``MemoryChannel`` customers, the Slack workspace in
channel rooms) creates every customer's private channel, invites the agents, posts the card and every
message. Slack is the emulator (:mod:`tests.emulators.slack`) with Slack's tiers made ``--speedup`` times
faster (20: Tier 2's 20 calls a minute become 20 in 3 s, and the minute of arrivals 3 s), and
relaydesk is told the same tiers (``rate_limits``), as a team would configure them. The emulator echoes
every bot post back as an event, as Slack does.

The clock runs from the first customer message until every message shows in its channel. The minimum
is what the tiers allow for the calls that were needed: for each method, its successful calls minus its
burst at its rate (and never less than the arrival time); the largest of these is the floor. The ratio
drain / minimum is printed as ``1.04x`` (goal: at most 1.1x). Afterwards every channel is checked: each
customer's messages are there once, in the order written, and the 429s the emulator answered are counted.

Usage::

    python -m bench.slack_burst                       # 500 customers x 2 messages, tiers x20
    python -m bench.slack_burst --customers 100 --speedup 30
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from bot_core.config import parse_config
from bot_core.desk import Desk
from bot_core.outbox import OutboxSettings
from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.devserver import free_port
from storage.db import migrate
from tests.emulators.slack import POST_PER_CHANNEL, SLACK_TIERS, Limit, scaled

AGENT = "U0AGENT"


@dataclass
class BurstResult:
    """One run: how long the drain took, the floor the tiers set, and what was checked."""

    customers: int
    messages: int
    drain: float
    minimum: float
    bottleneck: str
    rate_limited: dict[str, int]
    problems: list[str]

    @property
    def ratio(self) -> float:
        """Drain time over the minimum."""
        return self.drain / self.minimum

    def line(self) -> str:
        """The result as one printed line."""
        return (
            f"{self.customers} customers x {self.messages} messages: drain {self.drain:.2f} s, minimum "
            f"{self.minimum:.2f} s ({self.bottleneck}), 429s {self.rate_limited} -> "
            f"{self.ratio:.2f}x"
        )


def desk_yaml(base_url: str, tiers: dict[str, Limit], per_channel: Limit) -> str:
    """plugins.yaml: MemoryChannel customers and the Slack workspace told the emulator's tiers."""
    rates = ", ".join(f'"{m}": {limit.per_minute:g}' for m, limit in tiers.items())
    return f"""
plugins:
  - customers: {{use: "bot_core.testing:MemoryChannel"}}
  - slack:
      use: "bridge.workspaces.slack:SlackWorkspace"
      config:
        bot_token: "${{SLACK_BOT_TOKEN}}"
        signing_secret: "${{SLACK_SIGNING_SECRET}}"
        api_url: "{base_url}/api/"
        agents: ["{AGENT}"]
        undo_seconds: 0
        rate_limits: {{{rates}}}
        post_per_channel_per_minute: {per_channel.per_minute:g}
"""


def minimum_time(state: dict[str, Any], tiers: dict[str, Limit], arrival: float) -> tuple[float, str]:
    """The floor the tiers set for the successful calls the emulator saw: (seconds, which method)."""
    best, which = arrival, "arrivals"
    for method, count in state["calls"].items():
        limit = tiers.get(method)
        if limit is None:
            continue
        done = count - state["rate_limited"].get(method, 0)
        floor = max(0, done - limit.burst) / (limit.per_minute / 60.0)
        if floor > best:
            best, which = floor, f"{method}: {done} calls at {limit.per_minute / 60:g}/s"
    return best, which


def check(state: dict[str, Any], customers: int, messages: int) -> list[str]:
    """Every customer's messages in their channel, once each, in order."""
    problems: list[str] = []
    for n in range(customers):
        name = f"customer-{n}"
        found = [c for c in state["channels"] if c["name"].startswith(f"support-{name}-")]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} channels")
            continue
        texts = [text for text, username in found[0]["posts"] if username]
        wanted = [f"message {i} of {name}" for i in range(messages)]
        if texts != wanted:
            problems.append(f"{name}: {texts!r}")
    return problems


def posted(state: dict[str, Any]) -> int:
    """Customer messages shown in Slack so far."""
    return sum(1 for c in state["channels"] for _text, username in c["posts"] if username)


async def run_burst(customers: int, messages: int, speedup: float) -> BurstResult:
    """Run one burst (the emulator in a process of its own, as Slack is); returns its figures."""
    tiers = scaled(SLACK_TIERS, speedup)
    per_channel = Limit(POST_PER_CHANNEL.per_minute * speedup, POST_PER_CHANNEL.burst)
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp) / "emulator-url"
        emulator = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.emulators.slack", str(speedup), str(url_file)
        )
        http = aiohttp.ClientSession()
        desk: Desk | None = None
        try:
            deadline = time.monotonic() + 30
            while not url_file.exists() or not url_file.read_text():
                if time.monotonic() > deadline or emulator.returncode is not None:
                    raise RuntimeError("the Slack emulator did not start")
                await asyncio.sleep(0.05)
            base_url = url_file.read_text()

            async def state() -> dict[str, Any]:
                async with http.get(f"{base_url}/_emulator/state") as response:
                    return cast(dict[str, Any], await response.json())

            url = f"sqlite://{Path(tmp) / 'bench.db'}"
            await migrate(url)
            port = free_port()
            config = parse_config(
                desk_yaml(base_url, tiers, per_channel),
                "plugins.yaml",
                environ={"SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_SIGNING_SECRET": "test-signing-secret"},
            )
            config = config.model_copy(
                update={
                    "storage": config.storage.model_copy(update={"database": url, "redis": ""}),
                    "server": config.server.model_copy(update={"host": "127.0.0.1", "port": port}),
                }
            )
            setup = {"request_url": f"http://127.0.0.1:{port}/slack/events", "users": [AGENT]}
            async with http.post(f"{base_url}/_emulator/setup", json=setup) as response:
                assert response.status == 200
            desk = Desk(config, serve_http=True, outbox_settings=OutboxSettings(poll_interval=0.1))
            await desk.start()
            channel = cast(MemoryChannel, desk.plugins["customers"])
            arrival = 60.0 / speedup  # "within a minute", at the emulated speed
            started = time.monotonic()

            async def customer(n: int) -> None:
                await asyncio.sleep(arrival * n / customers)
                for i in range(messages):
                    await channel.customer_writes(
                        f"c{n}", f"message {i} of customer-{n}", name=f"customer-{n}"
                    )

            await asyncio.gather(*(customer(n) for n in range(customers)))
            total = customers * messages
            while (done := posted(await state())) < total:
                if time.monotonic() - started > 900:
                    raise TimeoutError(f"only {done} of {total} messages posted after 900 s")
                await asyncio.sleep(0.05)
            drain = time.monotonic() - started
            final = await state()
        finally:
            if desk is not None:
                await desk.stop(timeout=30)
            await http.close()
            if emulator.returncode is None:
                emulator.terminate()
            await emulator.wait()
    minimum, bottleneck = minimum_time(final, tiers, arrival)
    return BurstResult(
        customers,
        messages,
        drain,
        minimum,
        bottleneck,
        dict(final["rate_limited"]),
        check(final, customers, messages),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the burst and print its line; exit 1 if a message was lost, doubled or out of order."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2)
    parser.add_argument("--speedup", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run_burst(args.customers, args.messages, args.speedup))
    print(result.line())
    for problem in result.problems[:20]:
        print("  problem:", problem)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
