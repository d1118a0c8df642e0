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
    for frac in (0, 0.5, 1):
        gy = y(int(top * frac))
        parts.append(
            f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}" '
            'stroke="#e3e6eb" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#5b6475">{int(top * frac)}</text>'
        )
    ticks = ((0, "start"), (len(days) // 2, "middle"), (len(days) - 1, "end")) if days else ()
    for i, anchor in ticks:
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" font-size="11" '
            f'fill="#5b6475">{escape(days[i][5:])}</text>'
        )
    for color, s in zip(PALETTE, shown, strict=False):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
            f"<title>{escape(s.label)}: {sum(s.values)} requests</title></polyline>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" '
        f'fill="{color}"/></svg> {escape(s.label)} ({sum(s.values)})</li>'
        for color, s in zip(PALETTE, shown, strict=False)
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
