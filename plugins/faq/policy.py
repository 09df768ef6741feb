"""The conversation policy: what the FAQ bot remembers about one conversation, and when it gives up.

Rules, whatever the matcher:

* no reply text is sent twice in one conversation (answers, choice lists and prompts alike): a reply
  that would repeat means the bot is going round in circles, and it hands over instead;
* a failed turn is a question the bot could not answer (it offered choices), a "that's not what I
  asked", or a picked choice followed by anything but thanks (the answer did not help);
* two failed turns in a row, or three in the conversation, hand over, whatever was answered in between.

The state is a small JSON object kept in the plugin's per-conversation store, so it survives restarts.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


def digest(text: str) -> str:
    """A short fingerprint of a reply (the state keeps these, not the texts)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


@dataclass
class ConversationState:
    """What the FAQ bot knows about one conversation."""

    language: str | None = None
    sent: list[str] = field(default_factory=list)  # digests of every reply sent
    failed_in_a_row: int = 0
    failed: int = 0
    choices: list[str] = field(default_factory=list)  # entry ids of the "did you mean" list on offer
    picked: str | None = None  # entry answered from a choice, until the next message says if it helped
    open_question: str | None = None  # the customer's last real question
    # for the supervisor's figures (bot_core.analytics reads them from the stored state)
    questions: int = 0  # customer turns the FAQ took
    answered: int = 0  # turns it answered with an entry
    unanswered: list[str] = field(
        default_factory=list
    )  # the latest questions it could not answer (5 at most)

    @classmethod
    def from_json(cls, data: Any) -> ConversationState:
        """The state stored by :meth:`to_json` (unknown or missing keys are ignored)."""
        if not isinstance(data, dict):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


@dataclass(frozen=True)
class Policy:
    """The limits, and the rules applied to a :class:`ConversationState`."""

    max_failed_in_a_row: int = 2
    max_failed: int = 3

    @staticmethod
    def may_send(state: ConversationState, text: str) -> bool:
        """False if ``text`` was already sent in this conversation."""
        return digest(text) not in state.sent

    @staticmethod
    def sent(state: ConversationState, text: str) -> None:
        """Remember that ``text`` was sent."""
        state.sent.append(digest(text))

    @staticmethod
    def fail(state: ConversationState) -> None:
        """One more turn that did not help the customer."""
        state.failed_in_a_row += 1
        state.failed += 1

    @staticmethod
    def helped(state: ConversationState) -> None:
        """The customer was helped (a confident answer, or thanks): the run of failures ends."""
        state.failed_in_a_row = 0

    def follow_up(self, state: ConversationState, *, thanks: bool, not_helped: bool) -> None:
        """Judge the previous reply by the customer's next message.

        Thanks after a picked choice means it helped; anything else after a picked choice, or a
        "that's not what I asked" after any reply, is one failed turn (never two for one message).
        """
        picked, state.picked = state.picked, None
        if thanks:
            self.helped(state)
        elif not_helped or picked is not None:
            self.fail(state)

    def exhausted(self, state: ConversationState) -> bool:
        """True once the failures reach a limit: the conversation goes to a person."""
        return state.failed_in_a_row >= self.max_failed_in_a_row or state.failed >= self.max_failed
