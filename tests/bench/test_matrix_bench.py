"""Smoke test of the Matrix relay benchmark (bench/matrix.py): tiny sizes against the session's Synapse.

Delivery is checked (every message in its room, once, in order); timing is not.
"""

from __future__ import annotations

import dataclasses

from bench.matrix import (
    MatrixTarget,
    PassResult,
    _bot_client,
    check_rooms,
    room_texts,
    run_benchmark,
    split,
)
from tests.matrix_server import SynapseInfo

MESSAGES = 7
ROOMS = 3


def _target(synapse: SynapseInfo) -> MatrixTarget:
    return MatrixTarget(
        base_url=synapse.base_url,
        server_name=synapse.server_name,
        registration=synapse.registration,
        appservice_port=synapse.appservice_port,
        agent_user_id=synapse.agent_user_id,
        server_pid=synapse.server.pid,
    )


def test_messages_are_split_evenly_over_the_rooms() -> None:
    assert split(7, 3) == [3, 2, 2]
    assert split(6, 3) == [2, 2, 2]
    assert sum(split(500, 10)) == 500


async def test_both_passes_deliver_every_message_once_in_order(synapse: SynapseInfo) -> None:
    target = _target(synapse)
    result = await run_benchmark(target, MESSAGES, ROOMS, rounds=2)

    assert result.problems() == []
    assert len(result.rounds) == 2
    passes: list[PassResult] = [p for r in result.rounds for p in (r.bare, r.relaydesk)]
    for p in passes:
        assert (p.messages, p.rooms) == (MESSAGES, ROOMS)
        assert p.seconds > 0 and p.rate > 0
        assert len(p.rooms_checked) == ROOMS
        assert sum(len(room.expected) for room in p.rooms_checked) == MESSAGES
    assert result.ratio > 0

    # read the rooms back independently of the bench's own check: all there, in order, nothing else
    reader = _bot_client(target)
    try:
        for p in passes:
            for room in p.rooms_checked:
                run = room.expected[0].split(" ", 1)[0]
                texts = [t for t in await room_texts(reader, room.room_id, room.sender) if t.startswith(run)]
                assert texts == room.expected
        # and the bench's check does notice a message that never arrived
        room = result.rounds[0].relaydesk.rooms_checked[0]
        run = room.expected[0].split(" ", 1)[0]
        lost = dataclasses.replace(room, expected=[*room.expected, f"{run} never sent"])
        problems = await check_rooms(reader, [lost], run)
        assert len(problems) == 1 and "1 missing" in problems[0]
    finally:
        await reader.close()
