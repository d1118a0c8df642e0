"""Server-rendered SVG line charts: no JavaScript, no CDN, nothing to build.

The markup is produced here with every label escaped, then placed in the page
as already-safe HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = ("#1f5eff", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0b7285", "#5c940d", "#862e9c")
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
MAX_SERIES = len(PALETTE)
# Lines that run together stay apart: each drawn wider than those after it, under them,
# and each with its own dash pattern.
DASHES = ("", "7 3", "2 3", "9 3 2 3", "4 4", "1 2", "12 4", "5 2 1 2")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[int]


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above value (so the axis reads well)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def line_chart(title: str, days: Sequence[str], series: Sequence[Series]) -> Markup:
    """Requests per day, one line per series (the busiest ``MAX_SERIES`` kept)."""
    shown = sorted(series, key=lambda s: -sum(s.values))[:MAX_SERIES]
    top = nice_ceiling(max([1, *(max(s.values, default=0) for s in shown)]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: int) -> float:
        return TOP + plot_h - (v / top) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for value in (0, top // 2, top) if top % 2 == 0 else (0, top):  # whole requests only
        gy = y(value)
        parts.append(
            f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}" '
            'stroke="#e3e6eb" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#5b6475">{value}</text>'
        )
    ticks = ((0, "start"), (len(days) // 2, "middle"), (len(days) - 1, "end")) if days else ()
    for i, anchor in ticks:
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" font-size="11" '
            f'fill="#5b6475">{escape(days[i][5:])}</text>'
        )
    for n, (color, dash, s) in enumerate(zip(PALETTE, DASHES, shown, strict=False)):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        width = 2 + 2 * (len(shown) - 1 - n)
        pattern = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{pattern} '
            f'stroke-linejoin="round" points="{points}">'
            f"<title>{escape(s.label)}: {sum(s.values)} requests</title></polyline>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><svg width="28" height="10" aria-hidden="true"><line x1="0" y1="5" x2="28" '
        f'y2="5" stroke="{color}" stroke-width="3"'
        + (f' stroke-dasharray="{dash}"' if dash else "")
        + f"/></svg> {escape(s.label)} ({sum(s.values)})</li>"
        for color, dash, s in zip(PALETTE, DASHES, shown, strict=False)
    )
    return Markup("".join(parts) + f'<ul class="legend">{legend}</ul>')  # noqa: S704


def daily_series(
    days: Sequence[str], counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, str]
) -> list[Series]:
    """counts: series id -> day -> requests; labels: series id -> what to show."""
    return [
        Series(labels.get(sid, sid), [per_day.get(d, 0) for d in days])
        for sid, per_day in counts.items()
    ]
