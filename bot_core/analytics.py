"""Service figures computed from the database: the conversation log, messages, the outbox, plugin state.

Nothing here counts in memory: every figure is read from stored rows, so a restart or a second worker
changes nothing, and ``relaydesk report``, the supervisor plugin's alerts and digest, and ``/metrics``
agree. It lives in the core (not in the supervisor plugin) because the ``relaydesk report`` command
(``bot_core/cli.py``) needs it and the core never imports a plugin; plugins reach it through
:mod:`bot_core.api`.

:func:`service_report` reads the conversations *opened* in ``[since, until)`` with three indexed
queries (conversations with their team, channel and customer; their log rows; their customer and agent
messages) plus one for reopens and one for the FAQ's stored state, and computes the figures in Python
(percentiles and durations need the rows in order; the same code on SQLite and PostgreSQL). Definitions:

- *volume*: conversations opened; ``by_channel`` splits it by the customer's channel.
- *bot-resolved*: never queued, assigned or transferred (the bot, or nobody, handled it), over volume.
- *hand-over rate*: conversations the bot handed to the queue (a ``queued`` change), over volume.
- *queue wait*: from first queued to the first ``assigned`` (p50 / p90, nearest rank).
- *abandoned*: closed while queued before any agent took it (the customer left), over conversations queued.
- *first response*: from the hand-over to people (first queued; opened when never queued) to the first
  message written by a person (not ``bot:…``).
- *next response*: from a customer's message (the first after a person's answer) to the next answer by a
  person, after the first response; the mean over all such gaps.
- *handle time*: time spent assigned (:func:`bot_core.conversation_service.times_from_log`).
- *resolution*: from opened to closed (closed conversations only).
- *reopen rate*: closed conversations whose customer opened a new one within ``reopen_window``, over closed.
- *transfers*: ``transferred`` changes.
- *CSAT*: the mean of the csat plugin's answers (``conversation.satisfaction``, 1-5; else a ``csat:<1-5>``
  conversation tag), ``n/a`` without any.
- *FAQ hit rate*: questions the FAQ answered over questions it saw, from its per-conversation state
  (``questions``, ``answered``, ``unanswered``); *top unanswered* groups those unanswered questions by
  their normalised text.

Groups: per team (the conversation's team now), agent (the last agent assigned), channel, and language
(the ``lang:<code>`` tag the FAQ sets, else the customer's locale's language, else ``unknown``).

:func:`live_figures` is the present moment of one team or all: queue length, oldest wait, first-response
breaches in the last hour, delivery give-ups in the last hour, with the conversations (and their rooms)
concerned.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from tortoise.queryset import ValuesListQuery

from bot_core.conversation_service import times_from_log
from bot_core.events import utcnow
from storage.models import (
    Conversation,
    ConversationLog,
    ConversationState,
    Direction,
    Message,
    OutboxItem,
    OutboxStatus,
    OutboxTarget,
    PluginState,
    Team,
)

__all__ = [
    "ConversationFacts",
    "Figures",
    "LiveFigures",
    "RoomLink",
    "ServiceMetrics",
    "ServiceReport",
    "live_figures",
    "parse_since",
    "percentile",
    "service_report",
]

FAQ_PLUGIN = "faq"
FAQ_STATE_KEY = "conversation"
_CHUNK = 500
_WORD = re.compile(r"[^\w\s]+")


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by nearest rank: the smallest value with at least p % at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_since(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s`` or ``2w`` as a duration; ValueError on anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (write 7d, 12h, 30m or 2w)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


class LogRow(NamedTuple):
    """One conversation-log row, as read for the figures (lighter than the model)."""

    id: int
    what: str
    from_state: str | None
    to_state: str
    agent_id: str | None
    at: datetime


@dataclass(frozen=True)
class Derived:
    """One conversation's own measures (seconds), computed once from its log and messages."""

    bot_only: bool
    handed: bool
    queued: bool
    abandoned: bool
    first_wait: float | None
    handle: float | None
    resolution: float | None
    transfers: int
    first_response: float | None
    gaps: tuple[float, ...]
    csat: int | None


@dataclass
class ConversationFacts:
    """What the figures need of one conversation (one per conversation opened in the range)."""

    id: int
    customer_id: int
    opened_at: datetime
    team: str
    channel: str
    language: str
    agent: str
    tags: list[str]
    log: list[LogRow] = field(default_factory=list)
    messages: list[tuple[datetime, str, str]] = field(default_factory=list)  # (at, direction, author)
    reopened: bool = False
    faq_questions: int = 0
    faq_answered: int = 0
    faq_unanswered: list[str] = field(default_factory=list)
    satisfaction: int | None = None  # the csat plugin's 1-5 answer (``ctx.rate``)

    @functools.cached_property
    def derived(self) -> Derived:
        """This conversation's measures (computed on first use; the facts are complete by then)."""
        return _derive(self)


@dataclass
class Figures:
    """The figures of a set of conversations (seconds for durations; None: nothing to measure, "n/a")."""

    volume: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    bot_resolved: float | None = None
    handover_rate: float | None = None
    queued: int = 0
    queue_wait_p50: float | None = None
    queue_wait_p90: float | None = None
    abandoned: int = 0
    abandonment_rate: float | None = None
    first_response_p50: float | None = None
    first_response_p90: float | None = None
    next_response_avg: float | None = None
    handle_avg: float | None = None
    resolution_p50: float | None = None
    closed: int = 0
    reopen_rate: float | None = None
    transfers: int = 0
    csat_avg: float | None = None
    csat_responses: int = 0
    faq_questions: int = 0
    faq_hit_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (durations in seconds, rates 0..1, None for n/a)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class ServiceReport:
    """Figures for a range: overall, per team, agent, channel and language, and the top unanswered questions."""

    since: datetime
    until: datetime
    team: str | None
    overall: Figures
    by_team: dict[str, Figures]
    by_agent: dict[str, Figures]
    by_channel: dict[str, Figures]
    by_language: dict[str, Figures]
    top_unanswered: list[tuple[str, int]]
    facts: list[ConversationFacts] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "team": self.team,
            "overall": self.overall.as_dict(),
            "by_team": {k: v.as_dict() for k, v in self.by_team.items()},
            "by_agent": {k: v.as_dict() for k, v in self.by_agent.items()},
            "by_channel": {k: v.as_dict() for k, v in self.by_channel.items()},
            "by_language": {k: v.as_dict() for k, v in self.by_language.items()},
            "top_unanswered": [{"question": q, "count": n} for q, n in self.top_unanswered],
        }

    def hourly(self, zone: ZoneInfo | None = None) -> tuple[list[int], list[float | None]]:
        """Conversations opened per hour of the day (local to ``zone``) and their mean queue wait (s)."""
        zone = zone or ZoneInfo("UTC")
        volume = [0] * 24
        waits: list[list[float]] = [[] for _ in range(24)]
        for fact in self.facts:
            hour = fact.opened_at.astimezone(zone).hour
            volume[hour] += 1
            wait = _queue_wait(fact)
            if wait is not None:
                waits[hour].append(wait)
        return volume, [sum(w) / len(w) if w else None for w in waits]


def _language(tags: Iterable[str], locale: str | None) -> str:
    for tag in tags:
        if tag.startswith("lang:"):
            return tag[5:] or "unknown"
    return locale.split("-")[0].lower() if locale else "unknown"


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


async def _raw_rows(query: ValuesListQuery[Any], *, datetime_at: int) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` query of plain columns, read without tortoise's per-value decoding.

    tortoise decodes each SQLite timestamp with the ``iso8601`` package, which was half of a large
    report's time; here column ``datetime_at`` is decoded with ``datetime.fromisoformat`` (PostgreSQL
    hands datetimes already). Only for columns whose stored form is their value: ids, text, timestamps.
    """
    query._choose_db_if_not_chosen()
    query._make_query()
    sql, params = query.query.get_parameterized_sql()
    _count, rows = await query._db.execute_query(sql, params)
    out = []
    for row in rows:
        values = list(tuple(row))
        stamp = values[datetime_at]
        if isinstance(stamp, str):
            stamp = datetime.fromisoformat(stamp)
        if stamp is not None and stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        values[datetime_at] = stamp
        out.append(tuple(values))
    return out


async def load_facts(
    since: datetime,
    until: datetime,
    *,
    team: str | None = None,
    reopen_window: timedelta = timedelta(days=7),
    faq_plugin: str = FAQ_PLUGIN,
) -> list[ConversationFacts]:
    """The facts of every conversation opened in ``[since, until)`` (of ``team`` only, if given)."""
    where: dict[str, Any] = {"created_at__gte": since, "created_at__lt": until}
    if team is not None:
        where["team__name"] = team
    rows = await Conversation.filter(**where).values(
        "id",
        "customer_id",
        "created_at",
        "tags",
        "team__name",
        "identity__channel",
        "customer__locale",
        "satisfaction",
    )
    facts = {
        r["id"]: ConversationFacts(
            id=r["id"],
            customer_id=r["customer_id"],
            opened_at=r["created_at"],
            team=r["team__name"] or "(none)",
            channel=r["identity__channel"],
            language=_language(r["tags"] or [], r["customer__locale"]),
            agent="",
            tags=list(r["tags"] or []),
            satisfaction=r["satisfaction"],
        )
        for r in rows
    }
    if not facts:
        return []
    related = {f"conversation__{k}": v for k, v in where.items()}
    log_rows = await _raw_rows(
        ConversationLog.filter(**related)
        .order_by("at", "id")
        .values_list("conversation_id", "id", "what", "from_state", "to_state", "agent_id", "at"),
        datetime_at=6,
    )
    for conversation_id, *row in log_rows:
        fact = facts.get(conversation_id)
        if fact is not None:
            entry = LogRow(*row)
            fact.log.append(entry)
            if entry.what == "assigned" and entry.agent_id:
                fact.agent = entry.agent_id
    messages = await _raw_rows(
        Message.filter(direction__in=[Direction.INBOUND, Direction.OUTBOUND], **related)
        .order_by("created_at", "id")
        .values_list("conversation_id", "created_at", "direction", "author"),
        datetime_at=1,
    )
    for conversation_id, at, direction, author in messages:
        fact = facts.get(conversation_id)
        if fact is not None:
            fact.messages.append((at, str(direction), author or ""))
    await _mark_reopens(list(facts.values()), reopen_window)
    await _read_faq(facts, faq_plugin)
    return sorted(facts.values(), key=lambda f: (f.opened_at, f.id))


async def _mark_reopens(facts: list[ConversationFacts], window: timedelta) -> None:
    closed = {f.id: _closed_at(f) for f in facts}
    customers = sorted({f.customer_id for f in facts if closed[f.id] is not None})
    later: dict[int, list[datetime]] = defaultdict(list)
    earliest = min((c for c in closed.values() if c is not None), default=None)
    if earliest is None:
        return
    for chunk in _chunks(customers):
        for customer_id, created in await Conversation.filter(
            customer_id__in=list(chunk), created_at__gte=earliest
        ).values_list("customer_id", "created_at"):
            later[customer_id].append(created)
    for fact in facts:
        at = closed[fact.id]
        if at is not None:
            fact.reopened = any(at <= c <= at + window for c in later[fact.customer_id])


async def _read_faq(facts: dict[int, ConversationFacts], plugin: str) -> None:
    scopes = [f"conversation:{i}" for i in facts]
    for chunk in _chunks(scopes):
        for scope, value in await PluginState.filter(
            plugin=plugin, key=FAQ_STATE_KEY, scope__in=list(chunk)
        ).values_list("scope", "value"):
            if isinstance(value, dict):
                value = value.get("v")  # StateStore keeps {"v": value}
            if not isinstance(value, dict):
                continue
            fact = facts[int(str(scope).split(":", 1)[1])]
            fact.faq_questions = int(value.get("questions") or 0)
            fact.faq_answered = int(value.get("answered") or 0)
            fact.faq_unanswered = [str(q) for q in value.get("unanswered") or []]


def _closed_at(fact: ConversationFacts) -> datetime | None:
    return next((e.at for e in fact.log if e.to_state == ConversationState.CLOSED.value), None)


def _queue_wait(fact: ConversationFacts) -> float | None:
    return fact.derived.first_wait


def _person(author: str) -> bool:
    return not author.startswith("bot:")


def _responses(fact: ConversationFacts) -> tuple[float | None, list[float]]:
    """First response (s) and the next-response gaps (s) of one conversation."""
    start = next((e.at for e in fact.log if e.to_state == ConversationState.QUEUED.value), fact.opened_at)
    first: float | None = None
    gaps: list[float] = []
    waiting_since: datetime | None = None
    for at, direction, author in fact.messages:
        if direction == Direction.OUTBOUND.value and _person(author):
            if first is None:
                if at >= start:
                    first = (at - start).total_seconds()
            elif waiting_since is not None:
                gaps.append((at - waiting_since).total_seconds())
            waiting_since = None
        elif direction == Direction.INBOUND.value and first is not None and waiting_since is None:
            waiting_since = at
    return first, gaps


def _csat(satisfaction: int | None, tags: Iterable[str]) -> int | None:
    if satisfaction is not None and 1 <= satisfaction <= 5:
        return satisfaction
    for tag in tags:
        if tag.startswith("csat:") and tag[5:].isdigit() and 1 <= int(tag[5:]) <= 5:
            return int(tag[5:])
    return None


def _derive(fact: ConversationFacts) -> Derived:
    kinds = {e.what for e in fact.log}
    states = {e.to_state for e in fact.log}
    queued = ConversationState.QUEUED.value in states
    closed_from_queue = any(
        e.to_state == ConversationState.CLOSED.value and e.from_state == ConversationState.QUEUED.value
        for e in fact.log
    )
    times = times_from_log(cast("list[ConversationLog]", fact.log))
    first, gaps = _responses(fact)
    return Derived(
        bot_only=not kinds & {"queued", "assigned", "transferred"},
        handed="queued" in kinds,
        queued=queued,
        abandoned=queued and closed_from_queue and "assigned" not in kinds,
        first_wait=times.first_wait.total_seconds() if times.first_wait is not None else None,
        handle=times.handle.total_seconds() if "assigned" in kinds else None,
        resolution=times.resolution.total_seconds() if times.resolution is not None else None,
        transfers=times.transfers,
        first_response=first,
        gaps=tuple(gaps),
        csat=_csat(fact.satisfaction, fact.tags),
    )


def figures_of(facts: Sequence[ConversationFacts]) -> Figures:
    """The :class:`Figures` of ``facts``."""
    fig = Figures(volume=len(facts))
    if not facts:
        return fig
    fig.by_channel = dict(sorted(Counter(f.channel for f in facts).items()))
    derived = [f.derived for f in facts]
    waits = [d.first_wait for d in derived if d.first_wait is not None]
    firsts = [d.first_response for d in derived if d.first_response is not None]
    nexts = [g for d in derived for g in d.gaps]
    handles = [d.handle for d in derived if d.handle is not None]
    resolutions = [d.resolution for d in derived if d.resolution is not None]
    csat = [d.csat for d in derived if d.csat is not None]
    fig.queued = sum(d.queued for d in derived)
    fig.abandoned = sum(d.abandoned for d in derived)
    fig.closed = len(resolutions)
    fig.transfers = sum(d.transfers for d in derived)
    fig.faq_questions = sum(f.faq_questions for f in facts)
    reopened = sum(f.reopened for f, d in zip(facts, derived, strict=True) if d.resolution is not None)
    answered = sum(f.faq_answered for f in facts)
    fig.bot_resolved = sum(d.bot_only for d in derived) / fig.volume
    fig.handover_rate = sum(d.handed for d in derived) / fig.volume
    fig.queue_wait_p50, fig.queue_wait_p90 = percentile(waits, 50), percentile(waits, 90)
    fig.abandonment_rate = fig.abandoned / fig.queued if fig.queued else None
    fig.first_response_p50, fig.first_response_p90 = percentile(firsts, 50), percentile(firsts, 90)
    fig.next_response_avg = sum(nexts) / len(nexts) if nexts else None
    fig.handle_avg = sum(handles) / len(handles) if handles else None
    fig.resolution_p50 = percentile(resolutions, 50)
    fig.reopen_rate = reopened / fig.closed if fig.closed else None
    fig.csat_avg = sum(csat) / len(csat) if csat else None
    fig.csat_responses = len(csat)
    fig.faq_hit_rate = answered / fig.faq_questions if fig.faq_questions else None
    return fig


def _normalised(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return " ".join(_WORD.sub(" ", text).split())


def top_unanswered(facts: Iterable[ConversationFacts], limit: int = 10) -> list[tuple[str, int]]:
    """The questions the FAQ could not answer, grouped by normalised text, most asked first."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for fact in facts:
        for question in fact.faq_unanswered:
            key = _normalised(question)
            if key:
                counts[key] += 1
                example.setdefault(key, question.strip())
    return [(example[k], n) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def _grouped(facts: Sequence[ConversationFacts], key: str) -> dict[str, Figures]:
    groups: dict[str, list[ConversationFacts]] = defaultdict(list)
    for fact in facts:
        name = getattr(fact, key)
        if key != "agent" or name:
            groups[name].append(fact)
    return {name: figures_of(group) for name, group in sorted(groups.items())}


async def service_report(
    since: datetime,
    until: datetime | None = None,
    *,
    team: str | None = None,
    reopen_window: timedelta = timedelta(days=7),
    faq_plugin: str = FAQ_PLUGIN,
) -> ServiceReport:
    """Every figure for conversations opened in ``[since, until)`` (until: now), of ``team`` or all teams."""
    until = until or utcnow()
    facts = await load_facts(since, until, team=team, reopen_window=reopen_window, faq_plugin=faq_plugin)
    return ServiceReport(
        since=since,
        until=until,
        team=team,
        overall=figures_of(facts),
        by_team=_grouped(facts, "team"),
        by_agent=_grouped(facts, "agent"),
        by_channel=_grouped(facts, "channel"),
        by_language=_grouped(facts, "language"),
        top_unanswered=top_unanswered(facts),
        facts=facts,
    )


# -- the present moment (alerts, gauges) -----------------------------------------------------------


@dataclass(frozen=True)
class RoomLink:
    """A conversation and the room that shows it (``room`` empty: no room yet)."""

    conversation_id: int
    workspace: str
    room: str

    @property
    def link(self) -> str:
        """A link agents can open: matrix.to for a Matrix room id, else ``workspace:room``."""
        if self.room.startswith("!"):
            return f"https://matrix.to/#/{self.room}"
        return f"{self.workspace}:{self.room}" if self.room else f"conversation {self.conversation_id}"


@dataclass
class LiveFigures:
    """One team's (or every team's) queue and deliveries now."""

    queue_length: int = 0
    oldest_wait: float = 0.0  # seconds the longest-queued conversation has waited (0: none queued)
    first_response_breaches: int = 0
    delivery_failures: int = 0
    queued_rooms: list[RoomLink] = field(default_factory=list)  # oldest first
    breach_rooms: list[RoomLink] = field(default_factory=list)
    failure_rooms: list[RoomLink] = field(default_factory=list)


async def _links(ids: Sequence[int]) -> list[RoomLink]:
    if not ids:
        return []
    rooms: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(list(ids)):
        for cid, workspace, external in await Conversation.filter(id__in=list(chunk)).values_list(
            "id", "room__workspace", "room__external_id"
        ):
            rooms[cid] = (workspace or "", external or "")
    return [RoomLink(i, *rooms.get(i, ("", ""))) for i in ids]


async def live_figures(
    team: str | None = None,
    *,
    now: datetime | None = None,
    first_response_target: timedelta = timedelta(minutes=5),
    window: timedelta = timedelta(hours=1),
) -> LiveFigures:
    """Queue length and oldest wait now; first-response breaches and delivery give-ups in the last ``window``.

    A breach is a conversation whose first wait (first queued → first assigned) passed
    ``first_response_target`` at a moment within the window (still waiting, or taken too late).
    A delivery failure is a customer delivery given up (outbox ``failed``) within the window.
    """
    now = now or utcnow()
    scope: dict[str, Any] = {} if team is None else {"team__name": team}
    queued = await (
        Conversation.filter(state=ConversationState.QUEUED, **scope)
        .order_by("queued_at", "id")
        .values_list("id", "queued_at")
    )
    live = LiveFigures(queue_length=len(queued))
    if queued and queued[0][1] is not None:
        live.oldest_wait = max(0.0, (now - queued[0][1]).total_seconds())
    live.queued_rooms = await _links([cid for cid, _ in queued])
    start = now - window - first_response_target
    related = {f"conversation__{k}": v for k, v in scope.items()}
    recent = await ConversationLog.filter(to_state="queued", at__gte=start, **related).values(
        "conversation_id"
    )
    breaches: list[int] = []
    candidates = sorted({int(row["conversation_id"]) for row in recent})
    by_conversation: dict[int, list[ConversationLog]] = defaultdict(list)
    for chunk in _chunks(candidates):
        for entry in await ConversationLog.filter(conversation_id__in=list(chunk)).order_by("at", "id"):
            by_conversation[entry.conversation_id].append(entry)
    for cid in candidates:
        rows = by_conversation[cid]
        first_queued = next((e.at for e in rows if e.to_state == "queued"), None)
        if first_queued is None:
            continue
        deadline = first_queued + first_response_target
        assigned = next((e.at for e in rows if e.what == "assigned" and e.at >= first_queued), None)
        if now - window < deadline <= now and (assigned is None or assigned > deadline):
            breaches.append(cid)
    live.first_response_breaches = len(breaches)
    live.breach_rooms = await _links(breaches)
    failed = await OutboxItem.filter(
        status=OutboxStatus.FAILED, target=OutboxTarget.CUSTOMER, updated_at__gte=now - window, **related
    ).values("conversation_id")
    live.delivery_failures = len(failed)
    ids = {int(row["conversation_id"]) for row in failed if row["conversation_id"] is not None}
    live.failure_rooms = await _links(sorted(ids))
    return live


def day_bounds(day: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC bounds of the local calendar day containing ``day`` in ``zone`` (23 or 25 h across DST)."""
    local = day.astimezone(zone)
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


# -- printing ----------------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (field, heading, kind: count | rate | duration | score)
    ("volume", "volume", "count"),
    ("bot_resolved", "bot-resolved", "rate"),
    ("handover_rate", "hand-over", "rate"),
    ("queue_wait_p50", "wait p50", "duration"),
    ("queue_wait_p90", "wait p90", "duration"),
    ("abandonment_rate", "abandoned", "rate"),
    ("first_response_p50", "1st resp p50", "duration"),
    ("first_response_p90", "1st resp p90", "duration"),
    ("next_response_avg", "next resp", "duration"),
    ("handle_avg", "handle", "duration"),
    ("resolution_p50", "resolution p50", "duration"),
    ("reopen_rate", "reopened", "rate"),
    ("transfers", "transfers", "count"),
    ("csat_avg", "CSAT", "score"),
    ("faq_hit_rate", "FAQ hits", "rate"),
)
"""The figures a report prints, in order."""


def fmt_duration(seconds: float | None) -> str:
    """``None`` → ``n/a``; otherwise ``45s``, ``3m 05s``, ``2h 10m``."""
    if seconds is None:
        return "n/a"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def fmt_value(value: float | None, kind: str) -> str:
    """A figure as people read it (``n/a`` when there was nothing to measure)."""
    if value is None:
        return "n/a"
    if kind == "rate":
        return f"{value * 100:.0f}%"
    if kind == "duration":
        return fmt_duration(value)
    if kind == "score":
        return f"{value:.1f}/5"
    return str(int(value))


def _rows(report: ServiceReport) -> list[tuple[str, str, Figures]]:
    rows = [("all", "all", report.overall)]
    for scope, groups in (
        ("team", report.by_team),
        ("agent", report.by_agent),
        ("channel", report.by_channel),
        ("language", report.by_language),
    ):
        rows.extend((scope, name, fig) for name, fig in groups.items())
    return rows


def format_table(report: ServiceReport) -> str:
    """The report as aligned text: one row per group, then the top unanswered questions."""
    head = ["", *[h for _, h, _ in COLUMNS]]
    body = [
        [
            name if scope == "all" else f"{scope} {name}",
            *[fmt_value(getattr(fig, f), k) for f, _, k in COLUMNS],
        ]
        for scope, name, fig in _rows(report)
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = [
        f"relaydesk report {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
        + (f", team {report.team}" if report.team else ""),
        "",
    ]
    for row in [head, *body]:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    lines.append("")
    if report.top_unanswered:
        lines.append("Top unanswered questions:")
        lines.extend(f"  {n:>3} x {q}" for q, n in report.top_unanswered)
    else:
        lines.append("Top unanswered questions: n/a")
    return "\n".join(lines) + "\n"


def _csv_number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{round(value, 4):g}" if isinstance(value, float) else str(value)


def format_csv(report: ServiceReport) -> str:
    """The report as CSV: ``scope,name`` and one column per figure (seconds, rates 0..1, empty for n/a)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scope", "name", *[f for f, _, _ in COLUMNS]])
    for scope, name, fig in _rows(report):
        writer.writerow([scope, name, *[_csv_number(getattr(fig, f)) for f, _, _ in COLUMNS]])
    for question, count in report.top_unanswered:
        writer.writerow(["unanswered", question, count, *[""] * (len(COLUMNS) - 1)])
    return out.getvalue()


def format_json(report: ServiceReport) -> str:
    """The report as JSON (:meth:`ServiceReport.as_dict`)."""
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


# -- /metrics ------------------------------------------------------------------------------------------

WAIT_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Upper bounds (seconds) of the queue-wait histogram's buckets (+Inf added)."""
ALL_TEAMS = "all"


@dataclass
class _Snapshot:
    at: datetime
    report: ServiceReport
    live: dict[str, LiveFigures]


class ServiceMetrics:
    """The service figures on ``/metrics``, read from the database at scrape time with a short cache.

    A Prometheus collector: :meth:`refresh` (awaited by the scrape handler before it renders) recomputes
    the figures at most every ``ttl`` seconds; ``collect`` serves the last snapshot. Rolling figures cover
    the conversations opened in the last ``window`` (24 h); live ones are the present (queue) or the last
    hour (breaches, give-ups). Every worker reads the same database, so every worker exports the same
    values: aggregate with ``max by (team)``, never ``sum``, across instances.
    """

    def __init__(self, ttl: float = 30.0, window: timedelta = timedelta(hours=24)) -> None:
        self.ttl = ttl
        self.window = window
        self._snapshot: _Snapshot | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, now: datetime | None = None) -> None:
        """Recompute the figures if the snapshot is older than ``ttl`` (one query set per ``ttl``, per process)."""
        now = now or utcnow()
        async with self._lock:
            if self._snapshot is not None and abs((now - self._snapshot.at).total_seconds()) < self.ttl:
                return
            report = await service_report(now - self.window, now)
            teams = sorted({str(name) for name in await Team.all().values_list("name", flat=True)})
            live = {ALL_TEAMS: await live_figures(None, now=now)}
            for team in teams:
                live[team] = await live_figures(team, now=now)
            self._snapshot = _Snapshot(now, report, live)

    def describe(self) -> list[Metric]:
        """The metric names, without reading anything (so registering never runs a query)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """The last snapshot's figures."""
        return self._families(self._snapshot)

    def _families(self, snap: _Snapshot | None = None) -> Iterable[Metric]:
        window = f"{int(self.window.total_seconds() // 3600)}h"
        per_team: dict[str, Figures] = {}
        facts_by_team: dict[str, list[ConversationFacts]] = defaultdict(list)
        if snap is not None:
            per_team = {ALL_TEAMS: snap.report.overall, **snap.report.by_team}
            for fact in snap.report.facts:
                facts_by_team[ALL_TEAMS].append(fact)
                facts_by_team[fact.team].append(fact)
        gauges: list[tuple[str, str, str]] = [
            ("conversations", "volume", "Conversations opened in the window"),
            ("bot_resolved_ratio", "bot_resolved", "Share of conversations never handed to people"),
            ("handover_ratio", "handover_rate", "Share of conversations the bot handed to the queue"),
            (
                "abandoned_ratio",
                "abandonment_rate",
                "Share of queued conversations closed before an agent took them",
            ),
            (
                "reopened_ratio",
                "reopen_rate",
                "Share of closed conversations whose customer came back within 7 days",
            ),
            ("transfers", "transfers", "Transfers between teams"),
            ("csat", "csat_avg", "Mean customer satisfaction (1-5)"),
            ("faq_hit_ratio", "faq_hit_rate", "Questions the FAQ answered over questions it saw"),
            ("next_response_seconds", "next_response_avg", "Mean time to the next answer by a person"),
            ("handle_seconds", "handle_avg", "Mean time conversations spent assigned"),
            ("resolution_seconds", "resolution_p50", "Median time from opened to closed"),
        ]
        for suffix, attr, doc in gauges:
            family = GaugeMetricFamily(
                f"relaydesk_service_{suffix}", f"{doc} (rolling window)", labels=["team", "window"]
            )
            for team, fig in per_team.items():
                value = getattr(fig, attr)
                if value is not None:
                    family.add_metric([team, window], float(value))
            yield family
        first = GaugeMetricFamily(
            "relaydesk_service_first_response_seconds",
            "First response (hand-over to the first answer by a person), by quantile (rolling window)",
            labels=["team", "window", "quantile"],
        )
        for team, fig in per_team.items():
            for q, value in (("0.5", fig.first_response_p50), ("0.9", fig.first_response_p90)):
                if value is not None:
                    first.add_metric([team, window, q], value)
        yield first
        channels = GaugeMetricFamily(
            "relaydesk_service_conversations_by_channel",
            "Conversations opened in the window, by channel",
            labels=["channel", "window"],
        )
        if snap is not None:
            for channel, count in snap.report.overall.by_channel.items():
                channels.add_metric([channel, window], count)
        yield channels
        waits = HistogramMetricFamily(
            "relaydesk_service_queue_wait_seconds",
            "Queue waits (first queued to first assigned) of conversations opened in the window",
            labels=["team", "window"],
        )
        for team, facts in facts_by_team.items():
            values = [w for w in (_queue_wait(f) for f in facts) if w is not None]
            buckets = [(str(b), float(sum(v <= b for v in values))) for b in WAIT_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            waits.add_metric([team, window], buckets, sum_value=sum(values))
        yield waits
        live_gauges: list[tuple[str, str, str]] = [
            ("relaydesk_queue_length", "queue_length", "Conversations waiting in the queue now"),
            (
                "relaydesk_queue_oldest_wait_seconds",
                "oldest_wait",
                "How long the longest-waiting conversation has waited",
            ),
            (
                "relaydesk_first_response_breaches",
                "first_response_breaches",
                "First-response target breaches in the last hour",
            ),
            (
                "relaydesk_delivery_give_ups",
                "delivery_failures",
                "Customer deliveries given up in the last hour",
            ),
        ]
        for name, attr, doc in live_gauges:
            family = GaugeMetricFamily(name, doc, labels=["team"])
            if snap is not None:
                for team, live in snap.live.items():
                    family.add_metric([team], float(getattr(live, attr)))
            yield family
