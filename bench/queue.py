"""How honest is the expected wait told to waiting customers? A simulated day of one team.

Arrivals follow a day's curve (quiet morning, busy midday and afternoon, quiet evening: a Poisson
process whose rate changes by the hour), handle times are log-normal (median ~6 min, a long tail),
agents work in shifts, each holding ``capacity`` conversations at once, served in arrival order. At each
arrival the bench asks :func:`plugins.handoff.wait.expected_waits` what the handoff plugin would tell
that customer (with the same facts the plugin has: free and busy slots, the handle times of the
conversations that ended), then records when the customer was actually taken.

The figure is the prediction error |quoted - actual| / actual over every customer who was told a wait of
a minute or more (a shorter quote is told as "in a moment"), as median and 90th percentile.
Goals: median ≤ 25 %, p90 ≤ 60 %.

    python -m bench.queue                # five days, seed 20
    python -m bench.queue --days 1 --seed 7
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from dataclasses import dataclass, field

from plugins.handoff.wait import expected_waits

HOUR = 3600.0
# arrivals per hour from 08:00 to 20:00: a busy day, more than the agents can take at midday
RATES = [10, 20, 34, 46, 54, 50, 44, 48, 52, 40, 24, 12]
# agents on duty per hour (shifts), each with CAPACITY slots
AGENTS = [1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 2, 1]
CAPACITY = 2
HANDLE_MEDIAN = 360.0
HANDLE_SIGMA = 0.6
QUOTE_FLOOR = 60.0
GOAL_MEDIAN = 0.25
GOAL_P90 = 0.60


@dataclass
class Slot:
    """One slot of one agent (a conversation it can hold): busy until ``free_at``."""

    free_at: float = 0.0


@dataclass(order=True)
class Waiting:
    """A customer waiting in line (order: arrival)."""

    arrived: float
    n: int = field(compare=False)
    handle: float = field(compare=False)


def simulate(seed: int, days: int) -> list[tuple[float, float]]:
    """(quoted, actual) waits of every customer who was told a wait of a minute or more."""
    rng = random.Random(seed)
    pairs: list[tuple[float, float]] = []
    for _ in range(days):
        arrivals = []
        t = 0.0
        end = len(RATES) * HOUR
        while True:
            rate = RATES[min(int(t // HOUR), len(RATES) - 1)] / HOUR
            t += rng.expovariate(rate)
            if t >= end:
                break
            arrivals.append(t)
        handles = [HANDLE_MEDIAN * math.exp(rng.gauss(0, HANDLE_SIGMA)) for _ in arrivals]
        pairs += _day(arrivals, handles)
    return pairs


def _agents_at(t: float) -> int:
    return AGENTS[min(int(t // HOUR), len(AGENTS) - 1)]


def _day(arrivals: list[float], handles: list[float]) -> list[tuple[float, float]]:
    """One day: (quoted, actual) of each customer told a wait of a minute or more."""
    slots: list[Slot] = []
    queue: list[Waiting] = []
    recent: list[float] = []
    quotes: dict[int, float] = {}
    taken: dict[int, float] = {}
    events = [(a, 1, n) for n, a in enumerate(arrivals)]  # (time, kind, n): kind 0 = a slot frees
    heapq.heapify(events)

    def staff(now: float) -> None:
        wanted = _agents_at(now) * CAPACITY
        while len(slots) < wanted:
            slots.append(Slot(free_at=now))
        # an agent leaving their shift finishes what they hold, then takes nothing more
        while len(slots) > wanted:
            idle = next((s for s in slots if s.free_at <= now), None)
            if idle is None:
                break
            slots.remove(idle)

    def hand_out(now: float) -> None:
        for slot in slots:
            if not queue:
                return
            if slot.free_at <= now:
                customer = heapq.heappop(queue)
                taken[customer.n] = now
                slot.free_at = now + customer.handle
                heapq.heappush(events, (slot.free_at, 0, customer.n))

    while events:
        now, kind, n = heapq.heappop(events)
        staff(now)
        if kind == 0:
            recent.append(handles[n])  # the plugin learns a handle time when the conversation ends
        if kind == 1:
            heapq.heappush(queue, Waiting(now, n, handles[n]))
        hand_out(now)
        if kind == 1 and n not in taken:
            ahead = sorted(queue)
            position = ahead.index(next(w for w in ahead if w.n == n))
            free = sum(1 for s in slots if s.free_at <= now)
            busy = sum(1 for s in slots if s.free_at > now)
            waits = expected_waits(free, busy, recent, position + 1)
            if waits is not None:
                quotes[n] = waits[-1]
    return [
        (quotes[n], taken[n] - arrivals[n])
        for n in quotes
        if n in taken and quotes[n] >= QUOTE_FLOOR and taken[n] > arrivals[n]
    ]


def percentile(values: list[float], share: float) -> float:
    """The ``share`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def verdict(value: float, goal: float) -> str:
    """'meets' or 'misses' for a figure against its goal (lower is better)."""
    return "meets" if value <= goal else "misses"


def main() -> None:
    """Run the simulated day(s) and print the prediction error."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    pairs = simulate(args.seed, args.days)
    errors = [abs(q - a) / a for q, a in pairs]
    if not errors:
        print("no customer waited a minute or more: nothing to measure")
        return
    med, p90 = statistics.median(errors), percentile(errors, 0.9)
    waits = sorted(a for _, a in pairs)
    print(f"customers told a wait: {len(pairs)} (median actual wait {statistics.median(waits) / 60:.1f} min)")
    print(
        f"median |quoted-actual|/actual: {med:.0%} (goal <= {GOAL_MEDIAN:.0%}): {verdict(med, GOAL_MEDIAN)}"
    )
    print(f"p90    |quoted-actual|/actual: {p90:.0%} (goal <= {GOAL_P90:.0%}): {verdict(p90, GOAL_P90)}")


if __name__ == "__main__":
    main()
