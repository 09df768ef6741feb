"""How a homeserver's answer to a send becomes an event id or the outbox's error."""

from __future__ import annotations

import pytest

from bot_core.adapters import RetryAfter
from bridge.workspaces.matrix.errors import MatrixError
from bridge.workspaces.matrix.send import event_id_of


def test_a_sent_event_gives_its_id() -> None:
    assert event_id_of(200, {"event_id": "$abc:server"}, "post") == "$abc:server"


def test_rate_limits_wait_as_long_as_the_homeserver_asks() -> None:
    with pytest.raises(RetryAfter) as limited:
        event_id_of(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 2500}, "post as customer")
    assert limited.value.seconds == 2.5 and "post as customer: rate limited" in str(limited.value)
    with pytest.raises(RetryAfter) as unspecified:
        event_id_of(429, None, "post")
    assert unspecified.value.seconds == 1.0


def test_other_failures_name_the_call_and_the_homeservers_reason() -> None:
    with pytest.raises(MatrixError, match="post as customer: M_FORBIDDEN You are not in this room"):
        event_id_of(403, {"errcode": "M_FORBIDDEN", "error": "You are not in this room"}, "post as customer")
    with pytest.raises(MatrixError, match="post: HTTP 502"):
        event_id_of(502, None, "post")  # a proxy's error page, not JSON
    with pytest.raises(MatrixError, match="post: HTTP 200"):
        event_id_of(200, {"unexpected": True}, "post")  # an answer without an event id
