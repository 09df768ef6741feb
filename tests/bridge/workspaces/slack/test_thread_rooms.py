"""Thread rooms, the undo window, files, edits and long messages, against the Slack emulator."""

from __future__ import annotations

import json

import aiohttp

from bot_core.events import Attachment
from storage.models import Message
from tests.bridge.workspaces.slack.conftest import ANN, BOB, SlackDesk, SlackDeskFactory, until
from tests.bridge.workspaces.slack.test_channel_rooms import first_contact
from tests.emulators.slack import SlackEmulator


def thread_config(slack: SlackEmulator, undo: float = 0) -> str:
    """Config lines for thread rooms in a public team channel the agents are in."""
    team = slack.add_channel("support-team", [ANN, BOB])
    return f'rooms: thread\n        team_channel: "{team}"\n        undo_seconds: {undo}'


def root_of(s: SlackDesk, team: str) -> dict[str, object] | None:
    return next((m for m in s.slack.messages(team, top=True) if m.get("blocks")), None)


async def test_thread_rooms_end_to_end(slack_desk: SlackDeskFactory, slack: SlackEmulator) -> None:
    s = await slack_desk(thread_config(slack))
    team = slack.channel_named("support-team").id
    assert slack.bot_user_id in slack.channels[team].members  # joined at start
    await s.customers.customer_writes("kim", "My parcel is late <!here>", name="Kim")
    root = await until(lambda: root_of(s, team), what="the card as the thread's root")
    ts = str(root["ts"])
    replies = await until(lambda: [m for m in slack.messages(team, thread_ts=ts) if m.get("username")])
    assert replies[0]["seen"] == "My parcel is late <!here>" and replies[0]["mentions"] == []
    await until(
        lambda: (
            "State:" in json.dumps(slack.messages(team)[0]["blocks"])
            and slack.messages(team)[0].get("edited")
        )
    )
    assert len(slack.messages(team, top=True)) == 1  # nothing else in the team channel itself

    await slack.user_posts(ANN, team, "Sorry Kim, on it", thread_ts=ts)  # a reply reaches the customer
    await slack.user_posts(BOB, team, "lunch anyone?")  # top-level talk in the team channel does not
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    assert s.customers.texts_to("kim") == ["Sorry Kim, on it"]

    # a note through the card's Note button: a modal, never the customer
    await slack.click(BOB, team, ts, "relay_note", value=f"{team}:{ts}")
    view = await until(lambda: slack.views and slack.views[-1])
    assert view["private_metadata"] == f"{team}:{ts}"
    answer = await slack.submit_view(BOB, view, {"note": "customer is a VIP"})
    assert answer[0].status == 200
    await until(
        lambda: any("📝 Note: customer is a VIP" in m["text"] for m in slack.messages(team, thread_ts=ts))
    )
    # ...or the "Internal note" message shortcut on any message of the thread
    await slack.message_shortcut(ANN, team, str(replies[0]["ts"]), "relay_note_shortcut")
    view = await until(lambda: len(slack.views) == 2 and slack.views[-1])
    assert view["private_metadata"] == f"{team}:{ts}"
    await slack.submit_view(ANN, view, {"note": "refund approved"})
    await until(
        lambda: any("📝 Note: refund approved" in m["text"] for m in slack.messages(team, thread_ts=ts))
    )
    # /relay in thread rooms points at the buttons
    told = await slack.slash_command(ANN, team, "/relay", "claim")
    assert "buttons" in told[0].body
    await slack.click(ANN, team, ts, "relay_close", value=f"{team}:{ts}")
    await until(lambda: "State: closed" in json.dumps(slack.messages(team)[0]["blocks"]))
    assert "Claim" not in json.dumps(slack.messages(team)[0]["blocks"])
    await slack.idle()
    assert s.customers.texts_to("kim") == ["Sorry Kim, on it"]
    assert await Message.filter(direction="note", text="customer is a VIP").count() == 1


async def test_undo_inside_the_window_sends_nothing(
    slack_desk: SlackDeskFactory, slack: SlackEmulator
) -> None:
    s = await slack_desk("undo_seconds: 1")
    channel = await first_contact(s)
    ts_undone, _ = await slack.user_posts(ANN, channel.id, "wrong customer, oops")
    offer = await until(lambda: [e for e in slack.ephemerals if e["user"] == ANN and e["blocks"]])
    assert "Undo" in json.dumps(offer[0]["blocks"])
    clicked = await slack.click(ANN, channel.id, ts_undone, "relay_undo", value=f"{channel.id}:{ts_undone}")
    assert clicked[0].status == 200
    await until(lambda: any("Undone" in e["text"] for e in slack.ephemerals))
    ts_deleted, _ = await slack.user_posts(ANN, channel.id, "also wrong")
    await slack.user_deletes(ANN, channel.id, ts_deleted)  # deleted inside the window
    ts_edited, _ = await slack.user_posts(ANN, channel.id, "Helo")
    await slack.user_edits(ANN, channel.id, ts_edited, "Hello Anna")  # edited inside the window
    # a later reply goes out after every earlier window closed: had anything undone been sent, it came first
    await slack.user_posts(ANN, channel.id, "Anything else?")
    await s.customers.sent.wait_for(lambda sent: len(sent) >= 2, timeout=10)
    assert s.customers.texts_to("anna") == ["Hello Anna", "Anything else?"]
    assert await Message.filter(direction="outbound").count() == 2


async def test_files_both_ways(slack_desk: SlackDeskFactory, slack: SlackEmulator) -> None:
    s = await slack_desk()
    slack.public_files["receipt.pdf"] = b"%PDF-1.4 receipt"
    attachment = Attachment(kind="file", url=f"{slack.base_url}/public/receipt.pdf", name="receipt.pdf")
    await s.customers.customer_writes(
        "anna", "here is my receipt", name="Anna Müller", attachments=(attachment,)
    )
    uploaded = await until(
        lambda: [f for f in slack.files.values() if f["name"] == "receipt.pdf" and f["shared"]]
    )
    assert uploaded[0]["data"] == b"%PDF-1.4 receipt"
    channel = slack.channels[uploaded[0]["shared"][0]]
    await slack.user_uploads(ANN, channel.id, "label.png", b"\x89PNG fake", "image/png", text="your label")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    delivery = s.customers.sent.items[0]
    assert delivery.text == "your label" and delivery.attachments[0].kind == "image"
    url = delivery.attachments[0].url
    assert url is not None and slack.token not in url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200 and await response.read() == b"\x89PNG fake"
        async with http.get(url.replace("sig=", "sig=0")) as response:
            assert response.status == 403


async def test_long_messages_fold_and_edits_follow(
    slack_desk: SlackDeskFactory, slack: SlackEmulator
) -> None:
    s = await slack_desk()
    long_text = "\n".join(f"line {n}" for n in range(40))
    channel = await first_contact(s, long_text)
    top = next(m for m in slack.messages(channel.id, top=True) if m.get("username"))
    assert "show more" in top["text"] and "line 39" not in top["text"]
    thread = await until(lambda: slack.messages(channel.id, thread_ts=top["ts"]))
    assert "line 39" in thread[0]["text"]

    message_id = await s.customers.customer_writes("anna", "typo", name="Anna Müller")
    await until(lambda: any(m["text"] == "typo" for m in slack.messages(channel.id)))
    await s.customers.customer_writes("anna", "fixed", name="Anna Müller", edit_of=message_id)
    await until(lambda: any(m["text"] == "fixed (edited)" for m in slack.messages(channel.id)))

    ts, _ = await slack.user_posts(ANN, channel.id, "Your order shipped Monday")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    await slack.user_edits(ANN, channel.id, ts, "Your order shipped Tuesday")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 2)
    assert s.customers.sent.items[1].edit_of is not None
    assert s.customers.sent.items[1].text == "Your order shipped Tuesday"
    await slack.user_deletes(ANN, channel.id, ts)
    await s.customers.sent.wait_for(lambda sent: len(sent) == 3)
    assert s.customers.sent.items[2].delete_of is not None
