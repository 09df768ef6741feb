"""The expected wait told to a waiting customer, from the team's recent service rate.

Method (measured by ``bench/queue.py``, figures in docs/benchmarks.md): each available agent offers
``capacity`` slots (conversations at once). While every slot is busy, conversations leave the queue at
the rate the slots finish theirs, one every ``θ = mean handle time / slots``, the mean taken over the
team's last 30 handle times (from an agent taking a conversation to closing it or handing it on), so it
follows the day's pace. The k-th in line, with ``free`` slots free now, waits for ``n = k - free`` of those
departures (none if ``n <= 0``). As in the M/M/c queue (Erlang C, all servers busy) that wait is
Gamma(n, θ)-distributed; the quote is its most likely value ``(n - 1)·θ``, and for the first in line
(an exponential wait, whose most likely value is 0) its median ``ln 2·θ``:

    wait(k) = max(n - 1, ln 2) · mean_handle / slots     (n = k - free > 0)

The mode rather than the mean (``n·θ``) because customers judge a quote relative to what they waited:
the mean overstates short waits (bench: p90 of |quoted - actual| / actual 57 % instead of 81 % over five
simulated days). With no agent available the wait is unknown (None): the customer is told their place only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_HANDLE = 600.0  # seconds, until the team has closed conversations to learn from
RECENT = 30  # handle times the mean is taken over


def mean_handle(handles: Sequence[float]) -> float:
    """The mean of the last :data:`RECENT` handle times (seconds), or :data:`DEFAULT_HANDLE` with none yet."""
    last = [t for t in handles if t > 0][-RECENT:]
    return sum(last) / len(last) if last else DEFAULT_HANDLE


def expected_waits(
    free_slots: int, busy_slots: int, handles: Sequence[float], waiting: int
) -> list[float] | None:
    """The expected wait (seconds) of each of ``waiting`` conversations in queue order.

    ``free_slots`` / ``busy_slots``: slots of the available agents free now / holding a conversation;
    ``handles``: the team's recent handle times. None when there is no slot at all (nobody available).
    """
    slots = max(free_slots, 0) + max(busy_slots, 0)
    if slots == 0:
        return None
    per_departure = mean_handle(handles) / slots
    out = []
    for k in range(1, waiting + 1):
        departures = k - max(free_slots, 0)
        out.append(0.0 if departures <= 0 else max(departures - 1, math.log(2)) * per_departure)
    return out
