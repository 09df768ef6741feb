"""The satisfaction survey after a close: asked once, in the customer's language, not after spam or an
opt-out; the score and comment recorded on the conversation, on the card, in ``!csat stats`` and on
/metrics; a reply that is not a score goes on like any message. On the channel double, on Telegram and on
WhatsApp (the text inside the 24-hour window, the configured template outside it)."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import aiohttp

from bot_core.analytics import service_report
from bot_core.desk import Desk
from bot_core.testing import MemoryWorkspace
from bridge.channels.whatsapp import WhatsAppChannel
from bridge.channels.whatsapp.channel import WEBHOOK_PATH
from bridge.workspaces.matrix.devserver import free_port
from plugins.csat.texts import BUILT_IN
from storage.models import Conversation, ConversationState
from tests.bot_core.test_relay_loop import doubles
from tests.bridge.channels.whatsapp.conftest import APP_SECRET, FAST_OUTBOX, TOKEN, whatsapp_plugin_yaml
from tests.bridge.channels.whatsapp.conftest import ENV as WA_ENV
from tests.conftest import DOUBLES_YAML, DeskFactory
from tests.emulators.telegram import TelegramEmulator
from tests.emulators.whatsapp import WINDOW_SECONDS, WhatsAppEmulator

YAML = DOUBLES_YAML + '  - csat: {use: "plugins.csat:CsatPlugin"}\n'
EN, ZH = BUILT_IN["en"], BUILT_IN["zh"]
QUESTION = f"{EN.question}\n{EN.scale}"


async def _settle(desk: Desk) -> None:
    assert await desk.wait_settled(15)


async def _closed_case(desk: Desk, user: str, *commands: str) -> str:
    """The customer asked something, an agent answered, then ran ``commands`` (ending with !close)."""
    channel, workspace = doubles(desk)
    await channel.customer_writes(user, "My parcel is late", name="Alice")
    await _settle(desk)
    room = workspace.room_of(user).room_id
    await workspace.agent_writes(room, "It arrives tomorrow, sorry for the wait.")
    for command in (*commands, "!close"):
        await workspace.agent_writes(room, command)
    await _settle(desk)
    return room


async def test_a_closed_conversation_is_rated_once_with_a_comment_shown_everywhere(
    database_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(database_url, YAML, serve_http=True)
    channel, workspace = doubles(desk)
    room = await _closed_case(desk, "u1")
    assert channel.texts_to("u1")[-1] == QUESTION

    await channel.customer_writes("u1", "4")
    await _settle(desk)
    assert channel.texts_to("u1")[-1] == EN.ask_comment
    await channel.customer_writes("u1", "Quick and friendly")
    await _settle(desk)
    assert channel.texts_to("u1")[-1] == EN.thanks
    assert channel.texts_to("u1").count(QUESTION) == 1  # the answer's own conversation is not surveyed

    rated = await Conversation.get(id=1)
    assert (rated.satisfaction, rated.satisfaction_comment) == (4, "Quick and friendly")
    card = workspace.rooms[room].card
    assert card is not None and card.attributes["satisfaction"] == "4/5 (conversation 1): Quick and friendly"
    assert (
        await Conversation.filter(state=ConversationState.CLOSED).count() == await Conversation.all().count()
    )

    await workspace.agent_writes(room, "!csat stats")
    await _settle(desk)
    assert workspace.texts(room, "notice")[-1] == (
        "Satisfaction: 1 answers, average 4.0/5, CSAT 100 % (4 or 5). By score: 1: 0, 2: 0, 3: 0, 4: 1, 5: 0."
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{desk.port}/metrics") as resp:
            metrics = await resp.text()
    assert 'relaydesk_csat_answers_total{plugin="csat",scale="csat",score="4"} 1.0' in metrics
    assert 'relaydesk_csat_asked_total{plugin="csat"} 1.0' in metrics
    # the supervisor's figures (relaydesk report, the digest, /metrics) read the same answer
    report = await service_report(rated.created_at - timedelta(minutes=1))
    assert (report.overall.csat_avg, report.overall.csat_responses) == (4.0, 1)


async def test_no_survey_after_spam_or_an_opt_out(sqlite_url: str, make_desk: DeskFactory) -> None:
    desk = await make_desk(sqlite_url, YAML)
    channel, _ = doubles(desk)
    await _closed_case(desk, "spammer", "!tag spam")
    await _closed_case(desk, "quiet", "!consent service off")
    await _closed_case(desk, "asked", "!tag shipping")
    assert QUESTION not in channel.texts_to("spammer")
    assert QUESTION not in channel.texts_to("quiet")
    assert channel.texts_to("asked")[-1] == QUESTION


async def test_a_reply_that_is_not_a_score_is_an_ordinary_message(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(sqlite_url, YAML)
    channel, workspace = doubles(desk)
    room = await _closed_case(desk, "u1")
    await channel.customer_writes("u1", "Actually, where is my refund?")
    await channel.customer_writes("u1", "5")  # the survey ended with the question: this 5 is just a message
    await _settle(desk)
    assert channel.texts_to("u1")[-1] == QUESTION  # no thanks, no comment request
    assert workspace.texts(room, "customer_message")[-2:] == ["Actually, where is my refund?", "5"]
    latest = await Conversation.all().order_by("-id").first()
    assert latest is not None and latest.state is not ConversationState.CLOSED
    assert (await Conversation.get(id=1)).satisfaction is None


async def test_a_telegram_customer_is_asked_in_chinese(
    telegram: TelegramEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    from tests.bridge.channels.telegram.conftest import ENV, doubles_yaml

    desk = await make_desk(
        sqlite_url, doubles_yaml(telegram) + '  - csat: {use: "plugins.csat:CsatPlugin"}\n', environ=ENV
    )
    workspace = desk.plugins["desk"]
    assert isinstance(workspace, MemoryWorkspace)
    user = telegram.user(2002, "小红", language_code="zh-hans")
    await telegram.customer_sends(user, "我的包裹还没到")
    await workspace.posts.wait_for(lambda items: any(p.text == "我的包裹还没到" for _, p in items))
    room = workspace.room_of("2002").room_id
    await workspace.agent_writes(room, "!close")
    await telegram.wait_for(lambda: f"{ZH.question}\n{ZH.scale}" in telegram.texts_to(2002))
    await telegram.customer_sends(user, "5分")
    await telegram.wait_for(lambda: ZH.ask_comment in telegram.texts_to(2002))
    await _settle(desk)
    assert (await Conversation.get(id=1)).satisfaction == 5


async def test_on_telegram_the_scores_are_buttons_and_a_press_records_the_score_once(
    sqlite_url: str, make_desk: DeskFactory, telegram: TelegramEmulator
) -> None:
    from tests.bridge.channels.telegram.conftest import ENV, doubles_yaml

    desk = await make_desk(
        sqlite_url, doubles_yaml(telegram) + '  - csat: {use: "plugins.csat:CsatPlugin"}\n', environ=ENV
    )
    workspace = desk.plugins["desk"]
    assert isinstance(workspace, MemoryWorkspace)
    user = telegram.user(2003, "Jo")
    await telegram.customer_sends(user, "Where is my parcel?")
    await workspace.posts.wait_for(lambda items: any(p.text == "Where is my parcel?" for _, p in items))
    await workspace.agent_writes(workspace.room_of("2003").room_id, "!close")
    await telegram.wait_for(lambda: QUESTION in telegram.texts_to(2003))
    [survey] = telegram.bot_messages(2003)
    keyboard = survey["reply_markup"]["inline_keyboard"]
    assert [b["text"] for row in keyboard for b in row] == EN.labels()  # one score per row (long titles)
    assert [b["callback_data"] for row in keyboard for b in row] == [f"csat:{n}" for n in range(1, 6)]

    query = await telegram.customer_presses(user, survey["message_id"], "5 very happy")
    await telegram.wait_for(lambda: EN.ask_comment in telegram.texts_to(2003))
    await telegram.wait_for(lambda: query["id"] in telegram.answered_queries)  # the spinner stopped
    await telegram.wait_for(lambda: "reply_markup" not in telegram.bot_messages(2003)[0])  # pressed once
    await telegram.customer_sends(user, "Quick and friendly")
    await telegram.wait_for(lambda: EN.thanks in telegram.texts_to(2003))
    await _settle(desk)
    rated = await Conversation.get(id=1)
    assert (rated.satisfaction, rated.satisfaction_comment) == (5, "Quick and friendly")
    stats = await desk.plugins["csat"].stats()  # type: ignore[attr-defined]
    assert stats["answers"] == 1 and stats["by_score"][5] == 1


async def test_the_nps_option_asks_zero_to_ten_and_reports_the_score(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await make_desk(
        sqlite_url,
        DOUBLES_YAML + '  - csat: {use: "plugins.csat:CsatPlugin", config: {scale: nps, comment: false}}\n',
    )
    channel, workspace = doubles(desk)
    nps_question = f"{EN.nps_question}\n{EN.nps_scale}"
    for user, answer in (("u1", "10"), ("u2", "9"), ("u3", "3"), ("u4", "7")):
        await _closed_case(desk, user)
        assert channel.texts_to(user)[-1] == nps_question
        await channel.customer_writes(user, answer)
        await _settle(desk)
        assert channel.texts_to(user)[-1] == EN.thanks
    room = workspace.room_of("u1").room_id
    await workspace.agent_writes(room, "!csat stats")
    await _settle(desk)
    # (2 promoters - 1 detractor) / 4 answers
    assert workspace.texts(room, "notice")[-1] == (
        "NPS +25 from 4 answers: 2 promoters (9-10), 1 passives, 1 detractors (0-6)."
    )
    assert (
        await Conversation.filter(satisfaction__isnull=False).count() == 0
    )  # not a 1-5 rating: not on the card


async def test_on_whatsapp_the_survey_goes_as_text_in_the_window_and_as_the_template_outside(
    sqlite_url: str, make_desk: DeskFactory
) -> None:
    whatsapp = WhatsAppEmulator(TOKEN, APP_SECRET)
    whatsapp.approve_template("csat_survey", "en_US", "Hi {{1}}, how did we do? Reply 1 (bad) to 5 (great).")
    await whatsapp.start()
    try:
        port = free_port()
        csat = """  - csat:
      use: "plugins.csat:CsatPlugin"
      config:
        templates:
          whatsapp: {name: csat_survey, language: en_US, languages: {de: de}, variables: ["{customer_name}"]}
"""
        desk = await make_desk(
            sqlite_url,
            f'server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}\nplugins:\n'
            + whatsapp_plugin_yaml(whatsapp, template=False)
            + '  - desk: {use: "bot_core.testing:MemoryWorkspace"}\n'
            + csat,
            serve_http=True,
            http_port=port,
            environ=WA_ENV,
            outbox=FAST_OUTBOX,
        )
        whatsapp.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        cast(WhatsAppChannel, desk.plugins["whatsapp"]).clock = whatsapp.now
        workspace = cast(MemoryWorkspace, desk.plugins["desk"])
        await whatsapp.customer_sends("4915100000001", "Ana", text="Where is my parcel?")
        await _settle(desk)  # Ana's is conversation 1, Ben's 2
        await whatsapp.customer_sends("4915100000002", "Ben", text="Wrong size, can I swap?")
        await _settle(desk)

        await workspace.agent_writes(workspace.room_of("4915100000001").room_id, "!close")
        # in the window: the text, with the scores as a list to pick from (five are too many for buttons)
        await whatsapp.wait_for(
            lambda: whatsapp.texts_to("4915100000001") == [f"interactive:list:{QUESTION}"]
        )
        [survey] = whatsapp.messages_to("4915100000001")
        assert survey["interactive"]["action"]["button"] == EN.menu
        assert whatsapp.choices_of(survey["id"]) == [(f"csat:{n}", t) for n, t in enumerate(EN.labels(), 1)]
        await whatsapp.customer_presses("4915100000001", "Ana", survey["id"], "4 happy")
        await whatsapp.wait_for(lambda: whatsapp.texts_to("4915100000001")[1:] == [EN.ask_comment])
        await _settle(desk)
        assert (await Conversation.get(id=1)).satisfaction == 4  # the press counts like a typed 4
        # the list can be opened again: another press changes the score (it is not taken for a comment)
        await whatsapp.customer_presses("4915100000001", "Ana", survey["id"], "5 very happy")
        await _settle(desk)
        rated = await Conversation.get(id=1)
        assert rated.satisfaction == 5 and not rated.satisfaction_comment
        assert len(whatsapp.texts_to("4915100000001")) == 2  # nothing more said

        whatsapp.advance(WINDOW_SECONDS + 3600)  # Ben's case is closed a day and an hour later
        await workspace.agent_writes(workspace.room_of("4915100000002").room_id, "!close")
        await whatsapp.wait_for(
            lambda: whatsapp.texts_to("4915100000002") == ["template:csat_survey:en_US:Ben"]
        )
        await whatsapp.customer_sends("4915100000002", "Ben", text="5")  # his answer reopens the window
        await whatsapp.wait_for(lambda: whatsapp.texts_to("4915100000002")[1:] == [EN.ask_comment])
        await _settle(desk)
        rated = await Conversation.get(id=2)
        assert rated.satisfaction == 5
        assert not [c for c in whatsapp.calls if c.response.get("error")]  # nothing refused by the window
    finally:
        await whatsapp.stop()
