"""Smoke tests of the queue benchmark (bench/queue.py): the simulation is reproducible, customers wait in
arrival order, and the figures are printed with their verdicts."""

from __future__ import annotations

import sys

import pytest

from bench.queue import main, percentile, simulate, verdict


def test_simulation_is_reproducible_and_measures_real_waits() -> None:
    first, again = simulate(3, 1), simulate(3, 1)
    assert first == again and len(first) > 50
    assert all(quoted >= 60 and actual > 0 for quoted, actual in first)
    assert simulate(4, 1) != first


def test_percentile_and_verdict() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.9) == 5.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert (verdict(0.2, 0.25), verdict(0.3, 0.25)) == ("meets", "misses")


def test_main_prints_both_figures_with_verdicts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.queue", "--days", "1", "--seed", "20"])
    main()
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("median |quoted-actual|/actual: ") and out[1].endswith(("meets", "misses"))
    assert out[2].startswith("p90    |quoted-actual|/actual: ") and out[2].endswith(("meets", "misses"))
