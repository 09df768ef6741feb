"""The ``csat`` plugin: after a conversation closes, one satisfaction question (1-5) and an optional comment.

The question goes to the customer once per conversation, in their language (the FAQ's ``lang:<code>``
tag of the conversation, else the customer's locale, else ``default_language``), with the scores as
buttons where the channel has them (a WhatsApp list, Telegram's inline keyboard; a press counts like the
typed digit) and as the numbered scale in the text everywhere. It is not asked when the conversation was closed as spam (tagged ``spam``)
or the customer opted out of service messages. The answer arrives as a new message (the core opens a new
conversation for it, as for any message after a close): a score is recorded on the conversation it
rates (shown on the card as ``satisfaction``), counted (``!csat stats``, ``relaydesk_csat_*`` on
/metrics), and the answer's own conversation is closed again; anything that is not a score ends the
survey and goes on like any message. With ``scale: nps`` the question is the Net Promoter one (0-10):
answers are counted the same way and ``!csat stats`` gives the NPS; they are not put on the card.
``templates`` names an approved template per channel instance: the survey goes as a template delivery
(WhatsApp sends the template outside its 24-hour window, the text inside it).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Literal

from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field

from bot_core.api import (
    HANDLED,
    AgentCommand,
    Choice,
    Context,
    ConversationEvent,
    CustomerMessage,
    Handled,
    Plugin,
    ScheduledFire,
    TemplateRef,
    on_command,
    on_conversation_event,
    on_customer_message,
    on_schedule,
)
from plugins.csat.texts import BUILT_IN, SurveyTexts, parse_nps, parse_score, pressed_score

PENDING = "csat_pending"  # customer state: the survey waiting for an answer
ASKED = "csat_asked"  # conversation state: asked (or an answer's own conversation): never ask again
ANSWERS = "answers"  # global scope of the plugin's store: conversation id -> score, comment, at


class SurveyTemplate(BaseModel):
    """An approved platform template the survey goes as on one channel (WhatsApp outside its 24-hour window,
    where free-form text is refused); inside the window the channel sends the survey's text."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    language: str = Field(default="en", min_length=1)  # the template language when ``languages`` has none
    languages: dict[str, str] = Field(default_factory=dict)  # survey language -> template language
    variables: list[str] = Field(default_factory=list)  # parameters in order; ``{customer_name}`` filled in

    def ref(self, survey_language: str, customer_name: str) -> TemplateRef:
        """The template for a survey in ``survey_language`` to the customer named ``customer_name``."""
        return TemplateRef(
            self.name,
            self.languages.get(survey_language, self.language),
            tuple(v.replace("{customer_name}", customer_name) for v in self.variables),
        )


class CsatConfig(BaseModel):
    """Settings of the ``csat`` plugin."""

    model_config = ConfigDict(extra="forbid")
    scale: Literal["csat", "nps"] = "csat"  # 1-5 satisfaction, or 0-10 likelihood to recommend
    delay_seconds: float = Field(default=0, ge=0)  # ask this long after the close (0: at once)
    answer_hours: float = Field(default=48, gt=0)  # a score later than this is an ordinary message
    comment: bool = True  # after a score, invite an optional comment
    comment_minutes: float = Field(
        default=30, gt=0
    )  # the next message this soon after a score is its comment
    default_language: str = "en"
    skip_tags: list[str] = Field(default_factory=lambda: ["spam"])  # closed as spam: not asked
    texts: dict[str, SurveyTexts] = Field(default_factory=dict)  # more languages, or other words
    templates: dict[str, SurveyTemplate] = Field(
        default_factory=dict
    )  # channel instance -> approved template


class CsatPlugin(Plugin[CsatConfig]):
    """Asks how it went after a close, records the answer on the conversation, counts the answers."""

    name = "csat"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asked: PromCounter | None = None
        self._answers: PromCounter | None = None

    async def start(self) -> None:
        """Register the counters on /metrics."""
        registry = self.services.metrics_registry
        if registry is None:
            return
        try:
            self._asked = PromCounter(
                "relaydesk_csat_asked", "Satisfaction questions sent", ["plugin"], registry=registry
            )
            self._answers = PromCounter(
                "relaydesk_csat_answers",
                "Satisfaction answers by scale (csat, nps) and score",
                ["plugin", "scale", "score"],
                registry=registry,
            )
        except ValueError:  # a second csat instance: its answers stay in !csat stats
            self.log.warning("csat metrics already registered by another instance")

    async def stop(self) -> None:
        """Unregister the counters."""
        registry = self.services.metrics_registry
        for counter in (self._asked, self._answers):
            if counter is not None and registry is not None:
                registry.unregister(counter)
        self._asked = self._answers = None

    def _texts(self, language: str) -> SurveyTexts:
        known = {**BUILT_IN, **self.config.texts}
        return known.get(language) or known.get(self.config.default_language) or BUILT_IN["en"]

    def _language(self, ctx: Context) -> str:
        known = {**BUILT_IN, **self.config.texts}
        for tag in ctx.conversation.tags:
            if tag.startswith("lang:") and tag[5:] in known:
                return tag[5:]
        locale = ctx.customer.locale or ""
        for candidate in (locale, locale.split("-")[0].lower()):
            if candidate in known:
                return candidate
        return self.config.default_language

    # -- asking --------------------------------------------------------------------------------

    @on_conversation_event("closed")
    async def closed(self, ctx: Context, event: ConversationEvent) -> None:
        """A conversation closed: ask (now or after ``delay_seconds``) unless it must not be asked."""
        if self.config.delay_seconds:
            await ctx.schedule("ask", key="csat", delay=self.config.delay_seconds)
        else:
            await self._ask(ctx)

    @on_schedule("ask")
    async def ask_later(self, ctx: Context, fire: ScheduledFire) -> None:
        """The delay after the close is over."""
        await self._ask(ctx)

    async def _ask(self, ctx: Context) -> None:
        if ctx.conversation.state != "closed":
            return  # reopened meanwhile
        if set(ctx.conversation.tags) & set(self.config.skip_tags):
            self.log.info("no survey: closed as spam", extra={"conversation": ctx.conversation.id})
            return
        service = await ctx.consent("service")
        if service is not None and not service.granted:
            self.log.info("no survey: opted out", extra={"conversation": ctx.conversation.id})
            return
        if not await ctx.state.add(ASKED, True):
            return  # asked already (or this conversation was a survey answer)
        language = self._language(ctx)
        texts = self._texts(language)
        await ctx.customer_state.set(
            PENDING,
            {
                "conversation": ctx.conversation.id,
                "asked_at": self.services.now().isoformat(),
                "language": language,
                "stage": "score",
                "scale": self.config.scale,
            },
        )
        survey = self.config.templates.get(ctx.customer.channel)
        template = survey.ref(language, ctx.customer.name or "") if survey else None
        # the scores as buttons where the channel has them; the text lists them already for the others
        if self.config.scale == "nps":
            text = f"{texts.nps_question}\n{texts.nps_scale}"
            choices = [Choice(id=f"nps:{n}", title=str(n)) for n in range(11)]
        else:
            text = f"{texts.question}\n{texts.scale}"
            choices = [Choice(id=f"csat:{n}", title=t) for n, t in enumerate(texts.labels(), 1)]
        await ctx.reply(text, template=template, choices=choices, choices_listed=True, menu=texts.menu)
        if self._asked is not None:
            self._asked.labels(self.instance_name).inc()

    # -- answers -------------------------------------------------------------------------------

    @on_customer_message()
    async def answer(self, ctx: Context, msg: CustomerMessage) -> Handled | None:
        """A score (or, right after one, a comment) for the survey waiting: recorded, thanked, closed."""
        pending = await ctx.customer_state.get(PENDING)
        if not isinstance(pending, dict) or pending.get("conversation") == ctx.conversation.id:
            return None
        now = self.services.now()
        texts = self._texts(str(pending.get("language")))
        rated = int(pending["conversation"])
        if pending.get("stage") == "comment":
            if now - datetime.fromisoformat(str(pending["scored_at"])) > timedelta(
                minutes=self.config.comment_minutes
            ):
                await ctx.customer_state.delete(PENDING)
                return None
            scale = str(pending.get("scale", "csat"))
            changed = pressed_score(msg.choice, scale)
            if changed is not None:  # another score button pressed (a list stays open): a change of mind
                if scale == "csat":
                    await ctx.rate(changed, conversation_id=rated)
                await self._record(rated, changed, None, now, count=False, scale=scale)
                await ctx.customer_state.set(PENDING, {**pending, "score": changed})
                await self._done(ctx, None)
                return HANDLED
            if pending.get("scale", "csat") == "csat":
                await ctx.rate(int(pending["score"]), msg.text.strip(), conversation_id=rated)
            await self._record(
                rated,
                int(pending["score"]),
                msg.text.strip(),
                now,
                count=False,
                scale=str(pending.get("scale", "csat")),
            )
            await ctx.customer_state.delete(PENDING)
            await self._done(ctx, texts.thanks)
            return HANDLED
        if now - datetime.fromisoformat(str(pending["asked_at"])) > timedelta(hours=self.config.answer_hours):
            await ctx.customer_state.delete(PENDING)
            return None
        scale = str(pending.get("scale", "csat"))
        score = pressed_score(msg.choice, scale)
        if score is None:
            score = parse_nps(msg.text) if scale == "nps" else parse_score(msg.text)
        if score is None:  # not an answer: the survey ends, the message goes on as any other
            await ctx.customer_state.delete(PENDING)
            return None
        if scale == "csat":
            await ctx.rate(score, conversation_id=rated)
        await self._record(rated, score, None, now, count=True, scale=scale)
        if self.config.comment:
            await ctx.customer_state.set(
                PENDING, {**pending, "stage": "comment", "score": score, "scored_at": now.isoformat()}
            )
            await self._done(ctx, texts.ask_comment)
        else:
            await ctx.customer_state.delete(PENDING)
            await self._done(ctx, texts.thanks)
        return HANDLED

    async def _done(self, ctx: Context, text: str | None) -> None:
        """Thank (unless ``text`` is None), and close the answer's own conversation (never surveyed itself)."""
        await ctx.state.add(ASKED, True)
        if text is not None:
            await ctx.reply(text)
        await ctx.tag("csat-answer")
        await ctx.close()

    async def _record(
        self,
        conversation: int,
        score: int,
        comment: str | None,
        at: datetime,
        *,
        count: bool,
        scale: str = "csat",
    ) -> None:
        store = self.services.store(ANSWERS)
        entry = {"score": score, "comment": comment, "at": at.isoformat(), "scale": scale}
        if count:
            if not await store.add(str(conversation), entry):
                return  # answered already (a replay, or a second score): counted once
            if self._answers is not None:
                self._answers.labels(self.instance_name, scale, str(score)).inc()
        else:
            await store.set(str(conversation), entry)

    # -- reporting -----------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Answers, the average, the share of 4s and 5s (CSAT %) and the count per score."""
        entries = list((await self.services.store(ANSWERS).items()).values())
        scores = [int(v["score"]) for v in entries if v.get("scale", "csat") == "csat"]
        nps = [int(v["score"]) for v in entries if v.get("scale") == "nps"]
        counts = Counter(scores)
        promoters, detractors = sum(1 for s in nps if s >= 9), sum(1 for s in nps if s <= 6)
        return {
            "answers": len(scores),
            "average": round(sum(scores) / len(scores), 2) if scores else None,
            "csat_percent": round(100 * sum(1 for s in scores if s >= 4) / len(scores)) if scores else None,
            "by_score": {s: counts.get(s, 0) for s in range(1, 6)},
            "nps_answers": len(nps),
            "nps": round(100 * (promoters - detractors) / len(nps)) if nps else None,
            "nps_split": (promoters, len(nps) - promoters - detractors, detractors),
        }

    @on_command("csat", usage="stats", help="satisfaction answers: count, average, CSAT %")
    async def command(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """``!csat stats``."""
        stats = await self.stats()
        lines = []
        if stats["answers"]:
            spread = ", ".join(f"{s}: {n}" for s, n in stats["by_score"].items())
            lines.append(
                f"Satisfaction: {stats['answers']} answers, average {stats['average']}/5, "
                f"CSAT {stats['csat_percent']} % (4 or 5). By score: {spread}."
            )
        if stats["nps_answers"]:
            promoters, passives, detractors = stats["nps_split"]
            lines.append(
                f"NPS {stats['nps']:+d} from {stats['nps_answers']} answers: {promoters} promoters (9-10), "
                f"{passives} passives, {detractors} detractors (0-6)."
            )
        await ctx.notice("\n".join(lines) or "Satisfaction: no answers yet.")
        return HANDLED
