"""The customers' stories of issue 20 replayed on a real desk (memory doubles, real SQLite, the real FAQ),
on a clock the test moves: each ends well."""

from __future__ import annotations

import re

from tests.plugins.handoff.conftest import StartDesk

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CARA = "@cara:example.org"

SUPPORT = f"""
default_team: support
teams:
  support:
    members: ["{ALICE}", "{BOB}"]
    capacity: 1
    timezone: Europe/Berlin
    assignment: claim
    targets: {{first_response: 15m}}
  billing:
    members: ["{CARA}"]
    timezone: Europe/Berlin
    assignment: least_busy
"""


async def test_greeting_loop_ends_with_a_person_a_place_and_a_wait(handoff_desk: StartDesk) -> None:
    """(a) A customer who asks for a person gets one: their place in line and a wait, then an agent."""
    desk = await handoff_desk(SUPPORT)
    await desk.says("u1", "hello")
    await desk.says("u1", "I want to talk to a person")
    replies = desk.got("u1")
    assert any("number 1 in line" in r for r in replies), replies
    notices = desk.notices("u1")
    assert any("Waiting for an agent" in n for n in notices), notices
    print(replies)
    print(notices)
