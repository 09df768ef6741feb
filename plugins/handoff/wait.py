"""The expected wait told to a waiting customer, from the team's recent service rate.

Method (measured by ``bench/queue.py``, figures in docs/benchmarks.md): each available agent offers
``capacity`` slots (conversations at once). While every slot is busy, conversations leave the queue at
the rate the slots finish theirs: ``slots / mean handle time``, the handle time being the mean of the
team's last 30 (from an agent taking a conversation to closing it or handing it on), so it follows the
day's pace. The k-th in line waits for k of those departures, less one for each slot free now:

    wait(k) = max(0, k - free) * mean_handle / slots

which is the M/M/c queue's expected wait of the k-th in line once all c servers are busy (Erlang C's
conditional wait, per position). With no agent available the wait is unknown (None): the customer is told
their place only. An earlier version simulated each busy slot's expected remaining time and took the
earliest; it overestimated short waits badly (the earliest of several expected times is later than the
expected earliest), see docs/benchmarks.md.
"""

from __future__ import annotations

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
    return [max(0, k + 1 - free_slots) * per_departure for k in range(waiting)]
