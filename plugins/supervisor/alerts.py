"""Threshold alerts: which are crossed now, and what the ops room reads when one is crossed or cleared.

Each check looks at the present (:func:`bot_core.api.live_figures`, the adapters' receiving states) and
says whether its alert is on. The plugin keeps each alert's last word in its store, so an alert is
posted once when it turns on and once when it turns off, whichever worker checks and however often
relaydesk restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot_core.api import LiveFigures, RoomLink, fmt_duration
from plugins.supervisor.config import AlertSettings


@dataclass(frozen=True)
class Check:
    """One alert's state now: on or off, what it says either way, the rooms concerned."""

    name: str
    on: bool
    crossed: str
    cleared: str
    rooms: Sequence[RoomLink] = ()


def _where(team: str | None) -> str:
    return team or "all teams"


def checks(
    team: str | None, live: LiveFigures, adapters: Mapping[str, str], settings: AlertSettings
) -> list[Check]:
    """The alerts of ``team`` that are configured, each on or off now."""
    where = _where(team)
    found: list[Check] = []
    if settings.queue_length is not None:
        found.append(
            Check(
                "queue_length",
                live.queue_length >= settings.queue_length,
                f"🔴 {where}: {live.queue_length} conversations waiting in the queue "
                f"(threshold {settings.queue_length}).",
                f"✅ {where}: the queue is down to {live.queue_length} (threshold {settings.queue_length}).",
                live.queued_rooms,
            )
        )
    if settings.oldest_wait is not None:
        found.append(
            Check(
                "oldest_wait",
                live.queue_length > 0 and live.oldest_wait >= settings.oldest_wait,
                f"🔴 {where}: a customer has waited {fmt_duration(live.oldest_wait)} "
                f"(threshold {fmt_duration(settings.oldest_wait)}).",
                f"✅ {where}: nobody has waited {fmt_duration(settings.oldest_wait)} any more "
                f"(longest wait now {fmt_duration(live.oldest_wait)}).",
                live.queued_rooms[:1],
            )
        )
    if settings.first_response_breaches is not None:
        found.append(
            Check(
                "first_response_breaches",
                live.first_response_breaches >= settings.first_response_breaches,
                f"🔴 {where}: {live.first_response_breaches} conversations waited longer than "
                f"{fmt_duration(settings.first_response_target)} for a first answer in the last hour "
                f"(threshold {settings.first_response_breaches}).",
                f"✅ {where}: first-response breaches in the last hour are down to "
                f"{live.first_response_breaches} (threshold {settings.first_response_breaches}).",
                live.breach_rooms,
            )
        )
    if settings.delivery_failures is not None:
        found.append(
            Check(
                "delivery_failures",
                live.delivery_failures >= settings.delivery_failures,
                f"🔴 {where}: {live.delivery_failures} messages to customers could not be delivered "
                f"in the last hour (threshold {settings.delivery_failures}).",
                f"✅ {where}: undelivered messages in the last hour are down to {live.delivery_failures} "
                f"(threshold {settings.delivery_failures}).",
                live.failure_rooms,
            )
        )
    if settings.adapter_down:
        for adapter, state in sorted(adapters.items()):
            found.append(
                Check(
                    f"adapter_down:{adapter}",
                    state == "down",
                    f"🔴 {adapter} is down: relaydesk cannot receive from it (see /healthz).",
                    f"✅ {adapter} is receiving again ({state}).",
                )
            )
    return found


def with_links(text: str, rooms: Sequence[RoomLink], limit: int) -> str:
    """``text`` followed by links to up to ``limit`` of the rooms concerned."""
    if not rooms or limit <= 0:
        return text
    shown = [f"• {room.link}" for room in rooms[:limit]]
    more = f"\n… and {len(rooms) - limit} more" if len(rooms) > limit else ""
    return text + "\n" + "\n".join(shown) + more
