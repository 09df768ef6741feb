"""Slack meets the rest of the desk (issues 20, 21): delivery statuses as reactions on the agent's message,
and the handoff plugin's hand-overs: the agent brought into the customer's channel and notified with a
real mention."""

from __future__ import annotations

from typing import Any, cast

from bot_core.testing import MemoryChannel
from bridge.workspaces.matrix.devserver import free_port
from tests.bridge.workspaces.slack.conftest import ANN, BOB, EVE, SlackDeskFactory, slack_yaml, until
from tests.bridge.workspaces.slack.test_channel_rooms import first_contact
from tests.conftest import DeskFactory
from tests.emulators.slack import Channel, SlackEmulator


def _reactions(slack: SlackEmulator, channel: str, ts: str) -> list[str]:
    [message] = [m for m in slack.messages(channel) if m["ts"] == ts]
    return [r["name"] for r in message.get("reactions", [])]


async def test_delivered_and_read_show_as_reactions_on_the_agents_message(
    slack_desk: SlackDeskFactory,
) -> None:
    s = await slack_desk()
    channel = await first_contact(s)
    ts, _ = await s.slack.user_posts(ANN, channel.id, "Your parcel left today.")
    await s.customers.sent.wait_for(lambda sent: len(sent) == 1)
    sent_id = f"out{s.customers.sent.items[0].outbox_id}"
    await s.customers.reports_status("anna", sent_id, "delivered")
    await until(lambda: _reactions(s.slack, channel.id, ts) == ["white_check_mark"], what="✅ on the message")
    await s.customers.reports_status("anna", sent_id, "read")
    await until(
        lambda: _reactions(s.slack, channel.id, ts) == ["white_check_mark", "eyes"], what="👀 on the message"
    )
    assert await s.desk.wait_settled(5)
    assert "reactions:write" in s.slack.scopes_needed
    assert not s.slack.rate_limited.get("reactions.add")


def _handoff_yaml(slack: SlackEmulator, rooms: str) -> str:
    return (
        slack_yaml(slack, f"undo_seconds: 0\n        {rooms}")
        + """  - handoff:
      use: "plugins.handoff:HandoffPlugin"
      config:
        default_team: support
        teams:
          support: {members: ["""
        + f'"{ANN}"'
        + """], assignment: claim}
          billing: {members: ["""
        + f'"{BOB}"'
        + """], assignment: claim}
"""
    )


async def _desk(make_desk: DeskFactory, slack: SlackEmulator, url: str, rooms: str = "") -> Any:
    port = free_port()
    desk = await make_desk(
        url,
        _handoff_yaml(slack, rooms),
        serve_http=True,
        http_port=port,
        environ={"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret},
    )
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    return desk


def _mentioning(slack: SlackEmulator, channel: str, user: str, thread_ts: str | None = None) -> list[str]:
    found = slack.messages(channel, thread_ts=thread_ts) if thread_ts else slack.messages(channel)
    return [m["text"] for m in found if m.get("bot_id") and f"@{user}" in m.get("mentions", [])]


async def test_a_handoff_to_an_agent_invites_them_back_and_mentions_them(
    slack: SlackEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    desk = await _desk(make_desk, slack, sqlite_url)
    customers = cast(MemoryChannel, desk.plugins["customers"])
    await customers.customer_writes("mia", "My tent arrived broken", name="Mia Wong")
    room = cast(Channel, await until(lambda: _channel_of(slack, "mia"), what="Mia's channel"))
    await until(lambda: {ANN, BOB} <= room.members, what="the agents invited")
    room.members.discard(BOB)  # Bob left the channel

    # Ann hands it to Bob: Slack sends her mention as <@U0BOB>
    await slack.user_posts(ANN, room.id, f"!transfer <@{BOB}>: refund approved, needs IBAN")
    await until(lambda: BOB in room.members, what="Bob invited back")
    texts = await until(lambda: _mentioning(slack, room.id, BOB), what="a post mentioning Bob")
    assert texts[0].startswith(f"🔔 <@{BOB}>: this conversation is yours now")  # his id as a mention
    invites = [a for m, a in slack.calls if m == "conversations.invite" and a.get("users") == BOB]
    assert invites  # invited by the hand-over, not only at the channel's creation (Ann and Bob together)
    await until(
        lambda: any("refund approved, needs IBAN" in m["text"] for m in slack.messages(room.id)),
        what="the hand-over note in the channel",
    )

    # Bob hands it to the support team (Ann, who is in the channel): mentioned, nobody invited twice
    await slack.user_posts(BOB, room.id, "!transfer support")
    support = await until(lambda: _mentioning(slack, room.id, ANN), what="a post mentioning Ann")
    assert f"<@{ANN}>" in support[0] and "a conversation is handed to you" in support[0]
    assert await desk.wait_settled(10)
    assert EVE not in room.members
    assert {"groups:write", "chat:write"} <= slack.scopes_needed


def _channel_of(slack: SlackEmulator, slug: str) -> Channel | None:
    return next((c for c in slack.channels.values() if c.name.startswith(f"support-{slug}")), None)


async def test_in_thread_rooms_a_handoff_mentions_the_agent_in_the_thread_and_invites_nobody(
    slack: SlackEmulator, sqlite_url: str, make_desk: DeskFactory
) -> None:
    team = slack.add_channel("support-desk", [ANN, BOB])
    desk = await _desk(make_desk, slack, sqlite_url, f'rooms: thread\n        team_channel: "{team}"')
    customers = cast(MemoryChannel, desk.plugins["customers"])
    await customers.customer_writes("kim", "Wrong size", name="Kim")
    top = await until(lambda: [m for m in slack.messages(team, top=True) if m.get("bot_id")], what="the card")
    thread = str(top[0]["ts"])
    await until(lambda: slack.messages(team, thread_ts=thread), what="Kim's message in the thread")
    invites_before = sum(m == "conversations.invite" for m, _ in slack.calls)

    await slack.user_posts(ANN, team, f"!transfer <@{BOB}>", thread_ts=thread)
    texts = await until(lambda: _mentioning(slack, team, BOB, thread), what="Bob mentioned in the thread")
    assert texts[0].startswith(f"🔔 <@{BOB}>")
    assert await desk.wait_settled(10)
    assert sum(m == "conversations.invite" for m, _ in slack.calls) == invites_before


async def test_presence_makes_an_agent_available_and_ops_channel_commands_answer_there(
    make_desk: DeskFactory, slack: SlackEmulator, sqlite_url: str
) -> None:
    """The handoff plugin with ``presence: true`` reads Ann's Slack presence (users.getPresence): active
    makes her available and hands her the waiting customer; in the team's ops channel ``!team`` and
    ``/relay queue`` answer in that channel."""
    from tests.plugins.handoff.conftest import Clock

    clock = Clock()
    port = free_port()
    yaml_text = (
        slack_yaml(slack, "undo_seconds: 0")
        + f"""  - handoff:
      use: "plugins.handoff:HandoffPlugin"
      config:
        default_team: support
        queue_unhandled: true
        teams:
          support: {{members: ["{ANN}"], assignment: least_busy, presence: true}}
"""
    )
    desk = await make_desk(
        sqlite_url,
        yaml_text,
        serve_http=True,
        http_port=port,
        environ={"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": slack.signing_secret},
        scheduler_clock=clock,
        scheduler_poll=3600,
    )
    slack.request_url = f"http://127.0.0.1:{port}/slack/events"
    customers = cast(MemoryChannel, desk.plugins["customers"])
    await customers.customer_writes("anna", "hello, a person please", name="Anna")
    assert await desk.wait_settled(10)
    await desk.plugins["handoff"].services.post_to_ops("support", "support's room", key="hello")
    ops = await until(
        lambda: next((c for c in slack.channels.values() if c.name.endswith("ops-support")), None),
        what="the ops channel",
    )

    async def tick() -> None:
        clock.move(minutes=1)
        await desk.scheduler.tick()
        assert await desk.wait_settled(10)

    await tick()  # never set: Slack reports away
    slack.set_presence(ANN, "active")
    await tick()
    assert "users:read" in slack.scopes_needed and any(m == "users.getPresence" for m, _ in slack.calls)
    await slack.user_posts(ANN, ops.id, "!team")

    def answer(start: str) -> str | None:
        found = [m["text"] for m in slack.messages(ops.id) if m.get("bot_id") and start in m["text"]]
        return found[-1] if found else None

    view = await until(lambda: answer("Team support"), what="!team's answer")
    assert "available (presence), 1/3: #" in view, view
    await slack.slash_command(ANN, ops.id, "/relay", "queue")
    line = await until(lambda: answer("Line of support"), what="/relay queue's answer")
    assert "0 waiting" in line, line
