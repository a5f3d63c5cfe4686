"""Charts as data for inline SVG: points placed on a fixed canvas, no I/O, no money.

A chart is drawn by templates/_charts.html from a `Chart`; the figures it
plots are the services' own (usage per day, MRR per month), passed in as
they are. Only the geometry is computed here, and every chart is shown with a
table of the same figures beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 600
HEIGHT = 220
LEFT = 64  # room for the axis labels
RIGHT = 12
TOP = 14
BOTTOM = 30


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the category (a day, a month)
    text: str  # the figure as printed


@dataclass(frozen=True)
class Tick:
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    title: str
    bars: Sequence[Bar]
    ticks: Sequence[Tick]
    limit_y: float | None  # where the limit line is drawn, when there is one
    limit_text: str
    every: int  # label every n-th bar on the axis
    width: int = WIDTH
    height: int = HEIGHT
    base: float = HEIGHT - BOTTOM


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(
    title: str,
    points: Sequence[tuple[str, int, str]],
    *,
    limit: int | None = None,
    limit_text: str = "",
    tick_text: object = None,
    minimum: int = 4,
) -> Chart:
    """Bars for `(label, value, printed value)`; a dashed line at `limit` when given.

    `tick_text(value) -> str` prints the axis figures (default: the integer); the scale
    reaches at least `minimum`, so an empty chart still has distinct ticks."""
    top = max([v for _, v, _ in points] + ([limit] if limit is not None else []) + [minimum])
    scale_max = nice_ceiling(top)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    slot = plot_w / max(1, len(points))
    bars = []
    for i, (label, value, text) in enumerate(points):
        h = plot_h * max(0, value) / scale_max
        bars.append(
            Bar(
                x=round(LEFT + i * slot + slot * 0.15, 1),
                y=round(base - h, 1),
                width=round(slot * 0.7, 1),
                height=round(h, 1),
                label=label,
                text=text,
            )
        )
    printer = tick_text if callable(tick_text) else (lambda v: f"{v:,}")
    ticks = [
        Tick(y=round(base - plot_h * f / 4, 1), text=str(printer(scale_max * f // 4)))
        for f in range(5)
    ]
    limit_y = round(base - plot_h * limit / scale_max, 1) if limit is not None else None
    return Chart(
        title=title,
        bars=bars,
        ticks=ticks,
        limit_y=limit_y,
        limit_text=limit_text,
        every=max(1, math.ceil(len(points) / 7)),
    )
