"""The daily digest: yesterday's key figures against the same weekday a week before, and a chart.

The chart (PNG, 800 x 360 px) shows yesterday's conversations per local hour as bars and their mean
queue wait as a line; it is drawn with matplotlib's Agg backend (no display, no GUI toolkit), in a
thread of its own so the event loop is not held up.
"""

from __future__ import annotations

import io
from datetime import date
from zoneinfo import ZoneInfo

from bot_core.api import Figures, ServiceReport, fmt_value

CHART_SIZE = (800, 360)
"""The chart's width and height in pixels."""
_DPI = 100

KEY_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("volume", "Conversations", "count"),
    ("bot_resolved", "Resolved by the bot", "rate"),
    ("handover_rate", "Handed to people", "rate"),
    ("queue_wait_p50", "Queue wait (median)", "duration"),
    ("queue_wait_p90", "Queue wait (90th pct)", "duration"),
    ("abandonment_rate", "Left while waiting", "rate"),
    ("first_response_p50", "First response (median)", "duration"),
    ("handle_avg", "Handle time (mean)", "duration"),
    ("resolution_p50", "Resolution (median)", "duration"),
    ("reopen_rate", "Reopened", "rate"),
    ("transfers", "Transfers", "count"),
    ("csat_avg", "CSAT", "score"),
    ("faq_hit_rate", "FAQ answered", "rate"),
)
"""The figures the digest lists, in order: (field, label, kind)."""


def digest_text(
    team: str | None, day: date, zone: ZoneInfo, yesterday: ServiceReport, week_before: ServiceReport
) -> str:
    """The digest's text: each key figure for ``day`` and, in brackets, for the same weekday a week before."""
    now, then = yesterday.overall, week_before.overall
    lines = [
        f"Daily digest, {team or 'all teams'}: {day:%A %d %B %Y} ({zone.key}), against {_week_before(day):%A %d %B}",
        "",
    ]
    width = max(len(label) for _, label, _ in KEY_FIGURES)
    for field, label, kind in KEY_FIGURES:
        lines.append(
            f"{label + ':':<{width + 1}} {fmt_value(getattr(now, field), kind)}"
            f"  ({fmt_value(getattr(then, field), kind)}{_trend(now, then, field)})"
        )
    if yesterday.top_unanswered:
        lines += ["", "Questions the FAQ could not answer:"]
        lines += [f"  {count} x {question}" for question, count in yesterday.top_unanswered[:3]]
    return "\n".join(lines)


def _week_before(day: date) -> date:
    return date.fromordinal(day.toordinal() - 7)


def _trend(now: Figures, then: Figures, field: str) -> str:
    a, b = getattr(now, field), getattr(then, field)
    if a is None or b is None or a == b:
        return ""
    return ", ↑" if a > b else ", ↓"


def chart_png(report: ServiceReport, zone: ZoneInfo, title: str) -> bytes:
    """The day's conversations per local hour (bars) and mean queue wait in minutes (line), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    volume, waits = report.hourly(zone)
    hours = list(range(24))
    figure = Figure(figsize=(CHART_SIZE[0] / _DPI, CHART_SIZE[1] / _DPI), dpi=_DPI)
    axes = figure.add_subplot()
    axes.bar(hours, volume, color="#4c78a8", label="conversations")
    axes.set_xlabel(f"hour ({zone.key})")
    axes.set_ylabel("conversations")
    axes.set_xticks(range(0, 24, 2))
    axes.set_xlim(-0.6, 23.6)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    line = axes.twinx()
    minutes = [w / 60 if w is not None else float("nan") for w in waits]
    line.plot(hours, minutes, color="#e45756", marker="o", linewidth=2, label="mean queue wait")
    line.set_ylabel("queue wait (min)")
    line.set_ylim(bottom=0)
    axes.set_title(title, fontsize=11)
    handles = axes.get_legend_handles_labels()
    more = line.get_legend_handles_labels()
    axes.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8, frameon=False)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()
