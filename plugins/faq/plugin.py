"""The FAQ plugin: answers routine questions from a knowledge base, and hands over the rest at once.

For every customer message of a conversation still with the bot (not queued, not taken by an agent) the
conversation logic (:mod:`plugins.faq.dialogue`) answers, offers "did you mean" choices (numbered in the
text, and buttons where the channel has them: a press picks like the typed number) or hands over,
under the conversation policy (:mod:`plugins.faq.policy`: no reply twice, two failed turns in a row or
three in all hand over), in the conversation's language (:mod:`plugins.faq.language`, the bot's words in
``plugins/faq/locales/<code>.yaml``). A request for a person, a complaint, a manager or a legal threat
always goes to a person (:mod:`plugins.faq.intents`); the agents' notice says which, and the conversation
is tagged ``handoff:<reason>``.

Handing over puts the conversation in the queue (``ctx.queue``) and tells the customer what happens next.
Agents edit the knowledge base from the room with ``!faq``; the file is reloaded when it changes, and a
broken file is reported while the last good knowledge base stays in use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot_core.api import (
    HANDLED,
    AgentCommand,
    AgentMessage,
    Choice,
    Context,
    CustomerMessage,
    Handled,
    Plugin,
    on_agent_message,
    on_command,
    on_customer_message,
)
from plugins.faq.dialogue import Dialogue, Turn
from plugins.faq.intents import HandoverIntents, IntentRecogniser
from plugins.faq.knowledge import KnowledgeBaseError, Problem, add_to_file, file_signature
from plugins.faq.loader import Loaded, build
from plugins.faq.locales import HANDOVER_TEXTS, MESSAGE_TEXTS, Locale, LocaleError, load_locales
from plugins.faq.matching import Matcher
from plugins.faq.policy import ConversationState, Policy
from plugins.faq.semantic import MissingExtra
from plugins.faq.stats import FaqCollector, FaqStats, reason_label
from plugins.faq.text import normalise

EXAMPLE_KNOWLEDGE_BASE = Path(__file__).parent / "examples" / "shop.yaml"
STATE_KEY = "conversation"  # the policy's state, per conversation
LANGUAGE_KEY = "language"  # the conversation's language code, for whoever wants to show texts in it
CHOICE_PREFIX = "faq:"  # the id of a "did you mean" button: "faq:2" picks the second entry offered
LOCALE_ATTRIBUTES = ("locale", "language", "language_code")  # where a channel may give the customer's locale


class Messages(BaseModel):
    """What the bot says in one language, replacing the locale file's texts that are given."""

    model_config = ConfigDict(extra="forbid")
    did_you_mean: str | None = Field(None, description="must contain {choices}, the numbered list")
    rephrase: str | None = None
    welcome: str | None = None
    next_steps: str | None = None
    handover: dict[str, str] = Field(
        default_factory=dict, description=f"per reason: {', '.join(HANDOVER_TEXTS)} (or a custom intent)"
    )


class HandoverIntent(BaseModel):
    """An intent that always goes to a person (adds to a shipped one of the same name)."""

    model_config = ConfigDict(extra="forbid")
    patterns: list[str] = Field(
        default_factory=list,
        description="regular expressions matched against the whole message (lower case, no punctuation)",
    )
    examples: list[str] = Field(
        default_factory=list, description="phrasings the matcher learns, any language"
    )
    enabled: bool = True


EDITING_COMMANDS = frozenset({"add", "learn", "reload"})


class FaqConfig(BaseModel):
    """Settings of the FAQ plugin (plugins.yaml)."""

    model_config = ConfigDict(extra="forbid")
    knowledge_base: str = Field(
        description="path of the YAML or CSV knowledge base (relative to the working directory)"
    )
    seed_from: str | None = Field(
        None,
        description="when knowledge_base does not exist yet, start it as a copy of this file "
        "('example': the English and Chinese shop sample shipped with relaydesk)",
    )
    matcher: Literal["lexical", "semantic", "tuned"] = Field(
        "lexical",
        description="lexical (no dependency), semantic (faq-semantic extra, multilingual) or "
        "tuned (faq-tuned extra, English-first: fine-tunes an encoder on the knowledge base at load time)",
    )
    answer_threshold: float | None = Field(
        None, description="fixed threshold; default: calibrated per knowledge base"
    )
    suggest_floor: float | None = Field(
        None,
        description="below this choice confidence no choices are offered: hand over (default: calibrated; "
        "semantic and tuned matchers rate the choices on their own scale, see `!faq ask`)",
    )
    target_wrong: float = Field(
        0.02, gt=0, lt=1, description="calibration: wrong answers allowed, share of all questions"
    )
    unrelated_share: float = Field(
        0.2, ge=0, lt=1, description="calibration: expected share of questions the KB does not cover"
    )
    choices: int = Field(3, ge=1, le=5)
    max_unanswered: int = Field(
        2, ge=1, description="failed turns in a row (choices offered, answer not helpful) before handing over"
    )
    max_failed: int = Field(3, ge=1, description="failed turns in one conversation before handing over")
    handover_phrases: list[str] = Field(
        default_factory=list,
        description="more whole messages that ask for a person (plain text, any language), "
        "besides the locale files' patterns",
    )
    handover_intents: dict[str, HandoverIntent] = Field(
        default_factory=dict,
        description="intents that always go to a person, added to the shipped person, complaint, manager "
        "and legal (same name: more patterns and examples; enabled: false turns one off)",
    )
    handover_team: str | None = None
    locales_dir: str | None = Field(
        None,
        description="a directory of more <code>.yaml locale files (new languages, or replacing shipped ones)",
    )
    reload_interval: float = Field(2.0, ge=0, description="seconds between checks of the file (0: never)")
    messages: dict[str, Messages] = Field(
        default_factory=dict, description="per language code: texts replacing the locale file's"
    )
    faq_editors: list[str] = Field(
        default_factory=list,
        description="agent ids allowed to change the knowledge base (!faq add, learn, reload); "
        "empty: every agent (the workspace relays only its agents' commands)",
    )


def _locales(settings: FaqConfig) -> dict[str, Locale]:
    """The locale files with the config's message overrides applied."""
    locales = load_locales(settings.locales_dir)
    for code, override in settings.messages.items():
        base = locales.get(code) or locales.get("en") or next(iter(locales.values()))
        texts = {m: getattr(override, m) or base.messages[m] for m in MESSAGE_TEXTS}
        if "{choices}" not in texts["did_you_mean"]:
            raise LocaleError(f"plugin faq, field messages.{code}.did_you_mean: must contain {{choices}}")
        locales[code] = dataclasses.replace(
            base, code=code, messages=texts, handover={**base.handover, **override.handover}
        )
    return locales


def _intents(settings: FaqConfig, locales: dict[str, Locale]) -> HandoverIntents:
    extra = {name: (i.patterns, i.examples) for name, i in settings.handover_intents.items()}
    if settings.handover_phrases:
        patterns, examples = extra.get("person", ([], []))
        phrases = [re.escape(normalise(p)) for p in settings.handover_phrases if normalise(p)]
        extra["person"] = ([*patterns, *phrases], examples)
    disabled = [name for name, i in settings.handover_intents.items() if not i.enabled]
    return HandoverIntents.build(locales, extra, disabled)


class FaqPlugin(Plugin[FaqConfig]):
    """Answers FAQs it is sure about, offers choices when unsure, hands over the rest (see the module doc)."""

    name = "faq"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loaded: Loaded | None = None
        self.last_error: str | None = None
        self.stats = FaqStats()
        self.locales = _locales(self.settings)
        self.intents = _intents(self.settings, self.locales)
        self.dialogue: Dialogue | None = None
        self.recogniser: IntentRecogniser | None = None
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._collector: FaqCollector | None = None
        self._attempts = asyncio.Condition()

    @property
    def settings(self) -> FaqConfig:
        """The validated config."""
        return self.config

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the knowledge base, then watch the file.

        A broken file stops the start with its error (file:line). A missing one does not: the error is
        logged, every message goes on to the agents, and the file is loaded as soon as it appears.
        """
        self._seed()
        await self.reload(raise_errors=file_signature(self.settings.knowledge_base) is not None)
        registry = self.services.metrics_registry
        if registry is not None:
            self._collector = FaqCollector(self.instance_name, lambda: self.stats, self._info)
            try:
                registry.register(self._collector)
            except ValueError:  # a second FAQ instance: its counters stay in `!faq stats`
                self.log.warning("faq metrics already registered by another instance")
                self._collector = None
        self._start_watcher()

    def _seed(self) -> None:
        """Create a missing knowledge base from ``seed_from`` (agents then edit the copy, not the sample)."""
        seed, target = self.settings.seed_from, Path(self.settings.knowledge_base)
        if seed is None or target.exists():
            return
        source = EXAMPLE_KNOWLEDGE_BASE if seed == "example" else Path(seed)
        if not source.is_file():
            problem = Problem(None, f"field seed_from: {source} not found")
            raise KnowledgeBaseError(str(target), [problem], self.instance_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.log.info(
            "faq knowledge base created from a sample", extra={"path": str(target), "from": str(source)}
        )

    async def stop(self) -> None:
        """Stop watching and unregister the metrics."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._collector is not None and self.services.metrics_registry is not None:
            self.services.metrics_registry.unregister(self._collector)
            self._collector = None

    async def reconfigure(self, config: FaqConfig) -> None:
        """Apply new settings; a new file or matcher is loaded (the old one stays if it is broken)."""
        old = self.settings
        self.config = config
        self.locales = _locales(self.settings)
        intents = _intents(self.settings, self.locales)
        examples_changed = intents.examples() != self.intents.examples()
        self.intents = intents
        fields = (
            "knowledge_base",
            "matcher",
            "answer_threshold",
            "suggest_floor",
            "target_wrong",
            "unrelated_share",
        )
        if examples_changed or any(getattr(old, f) != getattr(self.settings, f) for f in fields):
            await self.reload()
        elif self.loaded is not None:
            self.dialogue = self._dialogue(self.loaded)
        if old.reload_interval != self.settings.reload_interval:
            if self._watcher is not None:
                self._watcher.cancel()
            self._start_watcher()

    def _start_watcher(self) -> None:
        if self.settings.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch(), name=f"faq-watch-{self.instance_name}")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)  # polling the file, not waiting on a test
            current = file_signature(self.settings.knowledge_base)
            known = self.loaded.signature if self.loaded else None
            if current is not None and current != known and current != self._failed_signature:
                await self.reload()

    _failed_signature: tuple[int, int] | None = None

    async def reload(self, *, raise_errors: bool = False) -> bool:
        """Load the file again; on error log it, keep the last good knowledge base and return False."""
        try:
            return await self._reload(raise_errors)
        finally:
            async with self._attempts:
                self._attempts.notify_all()

    async def wait_for_load(self, predicate: Callable[[FaqPlugin], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds after a load attempt (tests, tools); TimeoutError otherwise."""
        async with self._attempts:
            await asyncio.wait_for(self._attempts.wait_for(lambda: predicate(self)), timeout)

    async def _reload(self, raise_errors: bool) -> bool:
        s = self.settings
        async with self._lock:
            signature = file_signature(s.knowledge_base)
            try:
                loaded = await asyncio.to_thread(
                    build,
                    s.knowledge_base,
                    matcher=s.matcher,
                    plugin=self.instance_name,
                    threshold=s.answer_threshold,
                    suggest_floor=s.suggest_floor,
                    target_wrong=s.target_wrong,
                    unrelated_share=s.unrelated_share,
                    signature=signature,
                    previous=self.loaded.matcher if self.loaded else None,
                )
                recogniser = await asyncio.to_thread(
                    IntentRecogniser.fit,
                    s.matcher,
                    loaded.kb.examples(),
                    self.intents.examples(),
                    loaded.matcher if s.matcher != "tuned" else self._recogniser_model(),
                )
            except (KnowledgeBaseError, MissingExtra) as exc:
                if isinstance(exc, MissingExtra):
                    exc = MissingExtra(f"plugin '{self.instance_name}', field 'matcher': {exc}")
                self.last_error = str(exc)
                self._failed_signature = signature
                kept = (
                    f" (still using the last good one, {len(self.loaded.kb.entries)} entries)"
                    if self.loaded
                    else ""
                )
                self.log.error("knowledge base not loaded%s:\n%s", kept, exc)
                if raise_errors:
                    raise exc from None
                return False
            self.loaded = loaded
            self.recogniser = recogniser
            self.dialogue = self._dialogue(loaded)
            self.last_error = None
            self._failed_signature = None
            c = loaded.calibration
            self.log.info(
                "knowledge base loaded",
                extra={
                    "file": s.knowledge_base,
                    "entries": len(loaded.kb.entries),
                    "matcher": s.matcher,
                    "threshold": round(c.threshold, 3),
                    "seconds": round(loaded.seconds, 2),
                },
            )
            return True

    def _info(self) -> dict[str, float]:
        if self.loaded is None:
            return {"entries": 0, "load_errors": float(self.last_error is not None)}
        return {
            "entries": len(self.loaded.kb.entries),
            "threshold": self.loaded.calibration.threshold,
            "load_seconds": self.loaded.seconds,
            "load_errors": float(self.last_error is not None),
        }

    # -- the conversation ----------------------------------------------------------------------

    def _recogniser_model(self) -> Matcher | None:
        return self.recogniser.matcher if self.recogniser is not None else None

    def _dialogue(self, loaded: Loaded) -> Dialogue:
        policy = Policy(self.settings.max_unanswered, self.settings.max_failed)
        return Dialogue(
            loaded,
            self.locales,
            self.intents,
            policy,
            recogniser=self.recogniser,
            choices=self.settings.choices,
        )

    @on_customer_message()
    async def on_question(self, ctx: Context, msg: CustomerMessage) -> Handled | None:
        """Answer, offer choices, or hand over (see :mod:`plugins.faq.dialogue`)."""
        dialogue = self.dialogue
        text = msg.text.strip()
        pressed = (msg.choice or "").removeprefix(CHOICE_PREFIX)
        if msg.choice and msg.choice.startswith(CHOICE_PREFIX) and pressed.isdigit():
            text = pressed  # a "did you mean" button: as if its number was typed
        if dialogue is None or not text or msg.edit_of or ctx.conversation.state != "bot":
            return None  # not ours: agents (or later plugins) take it
        seen = await ctx.state.get("seen", False)
        if not seen:
            await ctx.state.set("seen", True)
        self.stats.question(new_conversation=not seen)
        state = ConversationState.from_json(await ctx.state.get(STATE_KEY))
        state.questions += 1
        turn = await asyncio.to_thread(dialogue.turn, state, text, self._channel_locale(ctx, msg))
        if turn.language_changed:
            await ctx.state.set(LANGUAGE_KEY, turn.language)
            await ctx.tag(f"lang:{turn.language}")
        if turn.reply and turn.offered:  # the list is in the text; buttons too where the channel has them
            choices = [Choice(id=f"{CHOICE_PREFIX}{n}", title=t) for n, t in enumerate(turn.offered, 1)]
            await ctx.reply(turn.reply, choices=choices, choices_listed=True)
        elif turn.reply:
            await ctx.reply(turn.reply)
        if turn.answered:
            self.stats.answer(turn.answered)
            state.answered += 1
        if turn.unanswered:
            state.unanswered = [*state.unanswered, turn.unanswered][-5:]
        if turn.suggested and turn.unanswered:
            self.stats.suggest(turn.unanswered)
        elif turn.unanswered:
            self.stats.not_answered(turn.unanswered)
        if turn.handover:
            await self._hand_over(ctx, turn)
        # stored last: a crash before this replays the same turn, and the outbox keys keep it from doubling
        await ctx.state.set(STATE_KEY, state.to_json())
        return HANDLED

    @staticmethod
    def _channel_locale(ctx: Context, msg: CustomerMessage) -> str | None:
        """The customer's locale when the channel gives one (message or customer attributes)."""
        for attributes in (msg.attributes, ctx.customer.attributes):
            for key in LOCALE_ATTRIBUTES:
                if attributes.get(key):
                    return attributes[key]
        return None

    async def _hand_over(self, ctx: Context, turn: Turn) -> None:
        """Tell the agents why and what the open question is, tag the conversation, queue it."""
        reason = turn.handover or "person"
        question = f"Question: {turn.question}" if turn.question else "No question asked."
        await ctx.notice(f"🤖 {self.instance_name}: handed over ({reason_label(reason)}). {question}")
        await ctx.tag(f"handoff:{reason}")
        await ctx.queue(self.settings.handover_team)
        self.stats.hand_over(reason)
        self.log.info(
            "faq handed over",
            extra={"conversation": ctx.conversation.id, "reason": reason, "language": turn.language},
        )

    @on_agent_message()
    async def remember_reply(self, ctx: Context, msg: AgentMessage) -> None:
        """Keep the agent's latest reply, so that ``!faq learn`` can turn it into an entry."""
        if msg.text.strip() and not msg.edit_of and not msg.redacts:
            await ctx.state.set("agent_reply", msg.text.strip())

    # -- the agents' commands ------------------------------------------------------------------

    @on_command(
        "faq",
        usage="add <question>[; <question>...] | <answer> · learn [<id>] · list · ask <question> · stats · reload",
        help="FAQ: add an entry, turn your last reply into one, list, test a question, stats",
    )
    async def command(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """Dispatch ``!faq <sub-command>``."""
        sub, _, rest = cmd.raw.partition(" ")
        handler = {
            "add": self._cmd_add,
            "learn": self._cmd_learn,
            "list": self._cmd_list,
            "ask": self._cmd_ask,
            "stats": self._cmd_stats,
            "reload": self._cmd_reload,
        }.get(sub.lower())
        if handler is None:
            await ctx.notice(
                "Usage: !faq add <question>[; <question>...] | <answer> — new entry\n"
                "!faq learn [<id>] — your last reply in this room becomes the answer to the customer's open question "
                "(with an existing id: the question becomes another phrasing of it)\n"
                "!faq list · !faq ask <question> · !faq stats · !faq reload"
            )
            return HANDLED
        editors = self.settings.faq_editors
        if sub.lower() in EDITING_COMMANDS and editors and cmd.agent_id not in editors:
            self.log.warning("faq edit refused", extra={"agent": cmd.agent_id, "command": sub.lower()})
            await ctx.notice(f"⚠ {cmd.agent_id} may not change the FAQ: ask one of its editors.")
            return HANDLED
        await handler(ctx, rest.strip())
        return HANDLED

    async def _write(self, ctx: Context, entry_id: str, questions: list[str], answer: str | None) -> bool:
        try:
            await asyncio.to_thread(add_to_file, self.settings.knowledge_base, entry_id, questions, answer)
        except (KnowledgeBaseError, OSError, ValueError) as exc:
            await ctx.notice(f"⚠ Not saved: {exc}")
            return False
        if not await self.reload():
            await ctx.notice(f"⚠ Saved, but the knowledge base did not load:\n{self.last_error}")
            return False
        return True

    def _new_id(self, question: str) -> str:
        assert self.loaded is not None
        slug = "-".join(re.findall(r"[a-z0-9]+", question.lower())[:5]) or "entry"
        candidate, n = slug, 2
        while candidate in self.loaded.kb.entries:
            candidate, n = f"{slug}-{n}", n + 1
        return candidate

    async def _cmd_add(self, ctx: Context, rest: str) -> None:
        questions_part, sep, answer = rest.partition("|")
        questions = [q.strip() for q in questions_part.split(";") if q.strip()]
        if not sep or not questions or not answer.strip() or self.loaded is None:
            await ctx.notice("Usage: !faq add <question>[; <question>...] | <answer>")
            return
        entry_id = self._new_id(questions[0])
        if await self._write(ctx, entry_id, questions, answer.strip()):
            await ctx.notice(f"✅ Added FAQ entry '{entry_id}' ({len(questions)} question(s)).")

    async def _cmd_learn(self, ctx: Context, rest: str) -> None:
        question = ConversationState.from_json(await ctx.state.get(STATE_KEY)).open_question
        reply = await ctx.state.get("agent_reply")
        if self.loaded is None or not question:
            await ctx.notice("Nothing to learn: the customer has no question the FAQ did not answer.")
            return
        entry_id = rest.split()[0] if rest.split() else ""
        if entry_id and entry_id in self.loaded.kb.entries:
            if await self._write(ctx, entry_id, [question], None):
                await ctx.notice(f"✅ '{question}' is now a phrasing of '{entry_id}'.")
            return
        if not reply:
            await ctx.notice(
                "Answer the customer first: !faq learn turns your last reply in this room into the answer."
            )
            return
        entry_id = entry_id or self._new_id(question)
        if await self._write(ctx, entry_id, [question], reply):
            await ctx.notice(f"✅ Learned FAQ entry '{entry_id}': “{question}” → “{reply}”.")

    async def _cmd_list(self, ctx: Context, rest: str) -> None:
        if self.loaded is None:
            await ctx.notice(f"No knowledge base loaded.\n{self.last_error or ''}")
            return
        entries = list(self.loaded.kb.entries.values())
        lines = [f"FAQ: {len(entries)} entries in {Path(self.settings.knowledge_base).name}"]
        lines += [f"• {e.id} — {e.title} ({len(e.questions)} phrasings)" for e in entries[:40]]
        if len(entries) > 40:
            lines.append(f"… and {len(entries) - 40} more")
        if self.last_error:
            lines.append(
                f"⚠ The file has errors; the entries above are the last good version:\n{self.last_error}"
            )
        await ctx.notice("\n".join(lines))

    async def _cmd_ask(self, ctx: Context, rest: str) -> None:
        loaded, dialogue = self.loaded, self.dialogue
        if loaded is None or dialogue is None or not rest:
            await ctx.notice("Usage: !faq ask <question> — shows what the FAQ would do")
            return
        match = await asyncio.to_thread(loaded.matcher.match, rest, self.settings.choices)
        turn = await asyncio.to_thread(
            dialogue.turn, ConversationState(), rest
        )  # a new conversation's first turn
        verdict = (
            f"hand over ({reason_label(turn.handover)})"
            if turn.handover
            else f"answer {turn.answered}"
            if turn.answered
            else "offer choices"
        )
        c = dialogue.thresholds(rest)
        choices = (
            f"choice confidence {match.offer_confidence:.3f}"
            if match.choice_confidence is not None
            else "choices"
        )
        lines = [
            f"Confidence {match.confidence:.3f} (answer ≥ {c.threshold:.3f}; {choices} ≥ {c.suggest_floor:.3f}): {verdict}"
        ]
        lines += [f"{i}. {cand.entry_id} ({cand.score:.3f})" for i, cand in enumerate(match.candidates, 1)]
        await ctx.notice("\n".join(lines))

    async def _cmd_stats(self, ctx: Context, rest: str) -> None:
        await ctx.notice(self.stats_text())

    async def _cmd_reload(self, ctx: Context, rest: str) -> None:
        if await self.reload():
            assert self.loaded is not None
            await ctx.notice(f"Reloaded: {len(self.loaded.kb.entries)} entries.")
        else:
            await ctx.notice(f"⚠ Not reloaded; the last good knowledge base stays in use:\n{self.last_error}")

    def stats_text(self) -> str:
        """The ``!faq stats`` report."""
        s = self.stats
        handovers = sum(s.handed_over.values())
        lines = [
            f"FAQ since {s.since:%Y-%m-%d %H:%M} UTC: {s.questions} questions in {s.conversations} conversations.",
            f"Answered {s.answered} ({s.answer_rate:.0%}); offered choices {s.suggested}; "
            f"handed over {handovers} ({s.handover_rate:.0%} of conversations)"
            + (
                ": " + ", ".join(f"{reason_label(r)} {n}" for r, n in s.handed_over.most_common())
                if handovers
                else "."
            ),
        ]
        if self.loaded is not None:
            c = self.loaded.calibration
            lines.append(
                f"Knowledge base: {len(self.loaded.kb.entries)} entries, {self.settings.matcher} matcher, "
                f"{c.describe()}."
            )
        if s.hits:
            lines.append("Top entries: " + ", ".join(f"{e} {n}" for e, n in s.hits.most_common(10)))
        hot = s.hot_questions()
        if hot:
            lines.append("Hot unanswered questions (add them to the FAQ):")
            lines += [
                f"  {h.count}× “{h.example}”" + (f" (+ “{h.variants[0]}” …)" if h.variants else "")
                for h in hot
            ]
        if self.last_error:
            lines.append(f"⚠ Knowledge base file has errors (last good version in use):\n{self.last_error}")
        return "\n".join(lines)
