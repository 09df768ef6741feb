"""One customer turn with the FAQ bot: answer, offer choices, or hand over, under the conversation policy.

For each message of a conversation still with the bot:

1. the conversation's language is updated (:mod:`plugins.faq.language`);
2. a whole-message always-human intent (a person, a complaint, a manager, a legal threat) hands over;
3. thanks (or "👍"), "that's not what I asked" or anything else judge the previous reply
   (:mod:`plugins.faq.policy`); too many failed turns hand over;
4. a reply to a "did you mean" list picks that entry ("2", "第二个"; "0" asks for a person, at any time);
   thanks are answered once, a number without a list asks for the question in words;
5. otherwise a question the intent recogniser confidently takes for an always-human intent hands over;
   the matcher ranks the entries and a confident one is answered; below the threshold the best entries are offered
   as choices when they are plausible (the calibrated choice floor, and for the lexical matcher a shared
   topic word), and an off-topic question is told so and handed over at once.

No reply is ever sent twice in a conversation: one that would repeat hands over instead. This module
decides; the plugin stores and sends (:class:`Turn`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from plugins.faq.calibrate import Calibration
from plugins.faq.intents import HandoverIntents, IntentRecogniser
from plugins.faq.knowledge import detect_language
from plugins.faq.language import conversation_language, guess
from plugins.faq.loader import Loaded
from plugins.faq.locales import Locale, Patterns
from plugins.faq.policy import ConversationState, Policy
from plugins.faq.rules import picked_choice
from plugins.faq.text import normalise
from plugins.faq.topic import TopicIndex

_LETTER = re.compile(r"[^\W\d_]")


@dataclass
class Turn:
    """What the bot does for one customer message (the plugin carries it out)."""

    language: str
    language_changed: bool = False
    reply: str | None = None
    handover: str | None = None  # the reason: an intent, "off_topic", "unanswered" or "repeat"
    question: str | None = None  # the customer's open question, for the agents' notice
    answered: str | None = None  # the entry answered
    suggested: bool = False
    offered: tuple[str, ...] = ()  # the titles of a "did you mean" list, in order (buttons where there are)
    unanswered: str | None = None  # a question the knowledge base could not answer (for the stats)


class Dialogue:
    """The conversation logic over one loaded knowledge base (rebuilt when it reloads)."""

    def __init__(
        self,
        loaded: Loaded,
        locales: Mapping[str, Locale],
        intents: HandoverIntents,
        policy: Policy,
        *,
        recogniser: IntentRecogniser | None = None,
        choices: int = 3,
    ) -> None:
        self.loaded = loaded
        self.recogniser = recogniser
        self.locales = locales
        self.intents = intents
        self.policy = policy
        self.choices = choices
        self.default = loaded.kb.language if loaded.kb.language in locales else next(iter(locales))
        self.thanks = sum((loc.thanks for loc in locales.values()), Patterns())
        self.not_helped = sum((loc.not_helped for loc in locales.values()), Patterns())
        frequent = frozenset().union(*(loc.words for loc in locales.values()))
        self.topics = TopicIndex(loaded.kb, frequent)

    def locale(self, language: str) -> Locale:
        """The locale of ``language``, else the default one."""
        return self.locales.get(language) or self.locales[self.default]

    def turn(self, state: ConversationState, text: str, channel_locale: str | None = None) -> Turn:
        """Decide the bot's move for ``text`` and update ``state`` (blocking: the matcher runs here)."""
        before = state.language
        state.language = conversation_language(before, text, self.locales, self.default, channel_locale)
        turn = Turn(
            state.language or self.default,
            language_changed=state.language is not None and state.language != before,
        )
        intent = self.intents.by_pattern(text)
        if intent is not None:
            # a complaint says what it is about, and so does "My tent broke. Can I talk to an agent?";
            # a bare "agent" does not (the open question stays the one asked before)
            if intent != "person" or not self.intents.is_only(intent, text):
                state.open_question = text
            return self._hand_over(state, turn, intent)
        offered = [e for e in state.choices if e in self.loaded.kb.entries]
        pick = picked_choice(text, len(offered)) if offered else None
        if pick == 0 or normalise(text) == "0":  # "0 to talk to a person", as the prompts say
            return self._hand_over(state, turn, "person")
        wordless = not _LETTER.search(text)  # digits, emoji, punctuation: no question in it
        thanks = self.thanks.match(text) or (wordless and not any(c.isdigit() for c in text))
        not_helped = self.not_helped.match(text)
        self.policy.follow_up(state, thanks=thanks, not_helped=not_helped)
        if self.policy.exhausted(state):
            return self._hand_over(state, turn, "unanswered")
        if pick is not None:  # the list stays on offer until the next question
            return self._answer(state, turn, offered[pick - 1], picked=True)
        if thanks:  # a thanks is answered once; later thanks, "👍" and the like need no reply
            welcome = self.locale(turn.language).messages["welcome"]
            if wordless or not self.policy.may_send(state, welcome):
                return turn
            return self._send(state, turn, welcome)
        if not_helped or wordless or picked_choice(text, 5) is not None:  # a number without a list
            return self._say(state, turn, self.locale(turn.language).messages["rephrase"])
        state.open_question = text
        return self._question(state, turn, text)

    def _question(self, state: ConversationState, turn: Turn, text: str) -> Turn:
        kb, calibration = self.loaded.kb, self.thresholds(text)
        state.choices = []
        intent = self.recogniser.intent(text) if self.recogniser is not None else None
        if intent is not None and intent in self.intents.specs:
            return self._hand_over(state, turn, intent)
        match = self.loaded.matcher.match(text, self.choices)
        best = match.best
        if best is not None and match.confidence >= calibration.threshold and best.entry_id in kb.entries:
            self.policy.helped(state)
            return self._answer(state, turn, best.entry_id)
        turn.unanswered = text
        options = [c.entry_id for c in match.candidates if c.entry_id in kb.entries]
        plausible = (
            bool(options)
            and match.offer_confidence >= calibration.suggest_floor
            and (match.choice_confidence is not None or self.topics.related(text, options))
        )
        if not plausible:
            return self._hand_over(state, turn, "off_topic")
        self.policy.fail(state)
        if self.policy.exhausted(state):
            return self._hand_over(state, turn, "unanswered")
        titles = tuple(self.title(e, turn.language) for e in options)
        lines = "\n".join(f"{i}. {title}" for i, title in enumerate(titles, 1))
        reply = self.locale(turn.language).messages["did_you_mean"].format(choices=lines)
        if not self.policy.may_send(state, reply):
            return self._hand_over(state, turn, "repeat")
        self._send(state, turn, reply)
        state.choices = options
        turn.suggested = True
        turn.offered = titles
        return turn

    def thresholds(self, text: str) -> Calibration:
        """The calibrated (or configured) answer threshold and choice floor ``text`` is judged by."""
        return self.loaded.calibration.for_language(detect_language(text, self.loaded.kb.language))

    def title(self, entry_id: str, language: str) -> str:
        """How an entry is offered in a choice list: its first phrasing in ``language``, else its first."""
        entry = self.loaded.kb.entries[entry_id]
        same = [
            q
            for q in entry.questions
            if (g := guess(q, self.locales, self.default)) and g.language == language
        ]
        return (same or list(entry.questions))[0]

    def _send(self, state: ConversationState, turn: Turn, text: str) -> Turn:
        self.policy.sent(state, text)
        turn.reply = text
        return turn

    def _say(self, state: ConversationState, turn: Turn, text: str) -> Turn:
        if not self.policy.may_send(state, text):
            return self._hand_over(state, turn, "repeat")
        return self._send(state, turn, text)

    def _answer(self, state: ConversationState, turn: Turn, entry_id: str, *, picked: bool = False) -> Turn:
        text = self.loaded.kb.entries[entry_id].render(turn.language)
        if not self.policy.may_send(state, text):
            return self._hand_over(state, turn, "repeat")
        self._send(state, turn, text)
        turn.answered = entry_id
        state.picked = entry_id if picked else None
        return turn

    def _hand_over(self, state: ConversationState, turn: Turn, reason: str) -> Turn:
        locale = self.locale(turn.language)
        text = f"{locale.handover_text(reason)} {locale.messages['next_steps']}"
        if self.policy.may_send(state, text):  # handed over once already (and given back): say nothing twice
            self._send(state, turn, text)
        state.choices, state.picked = [], None
        turn.handover = reason
        turn.question = state.open_question
        return turn
