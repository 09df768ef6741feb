"""Choices a bot reply offers the customer (a survey's scores, "did you mean" entries), channel-neutral.

A plugin passes ``choices`` to :meth:`bot_core.context.Context.reply`; it does not know the channel. A
channel whose :class:`~bot_core.adapters.ChannelCapabilities` say ``choices >= len(choices)`` gets them in
:attr:`~bot_core.adapters.Delivery.choices` and shows them as buttons (WhatsApp reply buttons or a list,
Telegram's inline keyboard); any other channel gets the reply's text with the choices as a numbered list
(:func:`numbered`), unless the plugin wrote that list into its text already (``choices_listed``).

A press comes back as an ordinary :class:`~bot_core.events.CustomerMessage` whose ``text`` is the
choice's title and whose ``choice`` is its id; a typed answer (``2``, or the title) has no ``choice``.
:func:`picked` reads either.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID_BYTES = 64
"""Telegram's ``callback_data`` limit (WhatsApp takes 256 for a button and 200 for a list row)."""


class Choice(BaseModel):
    """One option of a reply: ``id`` comes back when it is pressed, ``title`` is what the customer sees."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=200)
    """A longer line under the title where the channel shows one (a WhatsApp list row)."""

    @field_validator("id")
    @classmethod
    def _short_id(cls, value: str) -> str:
        if len(value.encode()) > MAX_ID_BYTES or not value.isprintable():
            raise ValueError(f"a choice id is printable and at most {MAX_ID_BYTES} bytes (UTF-8)")
        return value


def numbered(text: str, choices: tuple[Choice, ...]) -> str:
    """``text`` followed by the choices as ``1. title`` lines (what a channel without buttons shows)."""
    lines = "\n".join(f"{n}. {c.title}" for n, c in enumerate(choices, 1))
    return f"{text.rstrip()}\n{lines}" if text.strip() else lines


_NUMBER = re.compile(r"(?:#|no\.? ?|number |option )?(\d{1,2})[.)]?", re.IGNORECASE)


def picked(text: str, choice: str | None, choices: tuple[Choice, ...] | list[Choice]) -> Choice | None:
    """The choice a customer message picks: the id of a pressed button (``choice``), else a typed number
    (``2``, ``#2``, ``2.``: 1-based, as :func:`numbered` lists them) or a title typed out; None otherwise."""
    options = tuple(choices)
    if choice is not None:
        for option in options:
            if option.id == choice:
                return option
    clean = " ".join(text.split())
    match = _NUMBER.fullmatch(clean.translate(_FULL_WIDTH))
    if match is not None:
        number = int(match.group(1))
        return options[number - 1] if 1 <= number <= len(options) else None
    for option in options:
        if option.title.casefold() == clean.casefold():
            return option
    return None


_FULL_WIDTH = {0xFF10 + n: ord("0") + n for n in range(10)}
