"""The FAQ stores what the supervisor's figures read: questions seen, answered, and those it could not answer."""

from __future__ import annotations

from datetime import timedelta

from bot_core.analytics import service_report
from bot_core.context import StateStore
from bot_core.events import utcnow
from storage.models import Conversation
from tests.bot_core.test_relay_loop import doubles
from tests.plugins.faq.conftest import FaqDesk
from tests.plugins.faq.test_conversation import answer, ask


async def test_faq_hit_rate_and_unanswered_questions_come_from_its_stored_state(faq_desk: FaqDesk) -> None:
    desk = await faq_desk()
    channel, _ = doubles(desk)
    start = utcnow() - timedelta(seconds=1)
    assert await ask(channel, "ann", "What are your opening times?") == answer("opening-hours")
    assert await ask(channel, "ann", "Can I pay using PayPal?") == answer("payment-methods")
    await ask(channel, "bob", "Tell me a joke about penguins")  # not in the knowledge base: handed over
    assert await desk.wait_settled()

    ann = await Conversation.get(identity__external_id="ann")
    state = await StateStore("faq", f"conversation:{ann.id}").get("conversation")
    assert (state["questions"], state["answered"], state["unanswered"]) == (2, 2, [])

    report = await service_report(start, utcnow() + timedelta(seconds=1))
    assert report.overall.faq_questions == 3
    assert report.overall.faq_hit_rate == 2 / 3
    assert report.top_unanswered == [("Tell me a joke about penguins", 1)]
    assert report.overall.handover_rate == 1 / 2
