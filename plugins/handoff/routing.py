"""Routing: which team a conversation handed to people goes to, and with what priority.

Rules are tried in plugins.yaml order and the first whose conditions all hold wins; none matching sends
the conversation to the default team. A conversation the FAQ tagged ``handoff:complaint`` gets at least
``complaint_priority`` whichever rule routed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from plugins.handoff.config import HandoffConfig, Match, parse_windows

HANDOFF_TAG = "handoff:"
LANGUAGE_TAG = "lang:"


@dataclass(frozen=True)
class Facts:
    """What routing looks at, gathered from the conversation, its customer and what they wrote."""

    text: str = ""
    tags: frozenset[str] = frozenset()
    language: str | None = None
    channel: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    now: datetime | None = None

    @property
    def intents(self) -> frozenset[str]:
        """The hand-over reasons tagged by the FAQ (``handoff:complaint`` → ``complaint``)."""
        return frozenset(t[len(HANDOFF_TAG) :] for t in self.tags if t.startswith(HANDOFF_TAG))


def language_of(tags: Iterable[str], locale: str | None) -> str | None:
    """The conversation's language: the FAQ's ``lang:`` tag, else the customer's locale's language."""
    for tag in tags:
        if tag.startswith(LANGUAGE_TAG):
            return tag[len(LANGUAGE_TAG) :].lower()
    if locale:
        return locale.split("-")[0].split("_")[0].lower()
    return None


def matches(match: Match, facts: Facts) -> bool:
    """Whether every condition of ``match`` holds for ``facts``."""
    if match.keywords:
        text = facts.text.casefold()
        if not any(word.casefold() in text for word in match.keywords):
            return False
    if match.intents and not facts.intents & {i.lower() for i in match.intents}:
        return False
    if match.tags and not facts.tags & {t.lower() for t in match.tags}:
        return False
    if match.language and (facts.language or "") not in {lang.lower() for lang in match.language}:
        return False
    if match.channel and facts.channel not in match.channel:
        return False
    if any(facts.attributes.get(k) != v for k, v in match.attributes.items()):
        return False
    if match.time:
        if facts.now is None:
            return False
        wall = facts.now.astimezone(ZoneInfo(match.timezone)).time().replace(tzinfo=None)
        if not any(
            (start <= wall < end) if start < end else (wall >= start or wall < end)
            for start, end in parse_windows(match.time)
        ):
            return False
    return True


@dataclass(frozen=True)
class Route:
    """Where a conversation goes: the team, its priority, and which rule decided (None: the default)."""

    team: str
    priority: int
    rule: int | None


def route(config: HandoffConfig, facts: Facts) -> Route:
    """The first matching rule's team and priority, else the default team; complaints get their priority."""
    chosen = Route(config.default_team, 0, None)
    for n, rule in enumerate(config.rules):
        if matches(rule.match, facts):
            chosen = Route(rule.team, rule.priority, n)
            break
    if "complaint" in facts.intents and chosen.priority < config.complaint_priority:
        chosen = Route(chosen.team, config.complaint_priority, chosen.rule)
    return chosen
