"""Two small inline SVG charts, no JavaScript: the repurchase curve and the lift of each wave.

Only numbers and escaped labels go into the markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40


def _nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-12:
            return step * power
    return 10 * power


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    return [low + (high - low) * i / count for i in range(count + 1)]


def _pct(value: float) -> str:
    """An axis label: 0%, 1.25%, 5%, 12.5%."""
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"


def curve_svg(points: Sequence[dict[str, Any]]) -> Markup:
    """Cumulative response rate by day since sending, treated (solid) against holdout (dashed)."""
    points = [p for p in points if p.get("response_rate") is not None or p.get("control_rate") is not None]
    if not points:
        return Markup("")
    last_day = max(int(p["day"]) for p in points) or 1
    top = _nice_ceiling(
        max(max(p.get("response_rate") or 0, p.get("control_rate") or 0) for p in points) * 1.05
    )
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: float) -> float:
        return LEFT + plot_w * day / last_day

    def y(rate: float) -> float:
        return TOP + plot_h * (1 - rate / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="repurchase curve: treated against holdout">'
    ]
    for tick in _ticks(0, top):
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_pct(tick)}</text>'
        )
    step = 5 if last_day > 10 else 1
    for day in range(0, last_day + 1, step):
        parts.append(
            f'<text class="axis" x="{x(day):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{day}</text>'
        )
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
        "days since sending 发送后天数</text>"
    )
    for key, css in (("control_rate", "holdout"), ("response_rate", "treated")):
        coords = " ".join(f"{x(int(p['day'])):.1f},{y(p[key]):.1f}" for p in points if p.get(key) is not None)
        parts.append(f'<polyline class="line {css}" points="{coords}"/>')
    parts.append(
        f'<g class="legend" transform="translate({LEFT + 12},{TOP + 6})">'
        '<line class="line treated" x1="0" x2="24" y1="6" y2="6"/>'
        '<text x="30" y="10">treated 实验组</text>'
        '<line class="line holdout" x1="130" x2="154" y1="6" y2="6"/>'
        '<text x="160" y="10">holdout 对照组 (natural 自然复购)</text></g>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def lift_svg(rows: Sequence[dict[str, Any]]) -> Markup:
    """Each wave's lift (percentage points) with its 95% interval, in order of sending."""
    rows = [r for r in rows if r.get("lift") is not None]
    if not rows:
        return Markup("")
    # The scale follows the lifts, not the intervals: a small wave's interval spans tens of points
    # and would flatten every other wave. Intervals are cut at the chart's edge.
    lifts = [r["lift"] for r in rows]
    lows = [r["lift_low"] for r in rows if r.get("lift_low") is not None]
    span = _nice_ceiling(max(max(abs(v) for v in lifts) * 1.5, 0.01))
    low, high = (-span, span) if min(lifts + lows) < 0 else (0.0, span)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(rows)

    def x(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    def y(value: float) -> float:
        return TOP + plot_h * (high - min(max(value, low), high)) / (high - low)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="lift per wave with its 95% interval">'
    ]
    for tick in _ticks(low, high):
        css = "zero" if abs(tick) < 1e-12 else "grid"
        parts.append(
            f'<line class="{css}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{tick * 100:+.1f}</text>"
        )
    labelled = {0, len(rows) - 1, *range(0, len(rows), max(1, len(rows) // 6))}
    for i, r in enumerate(rows):
        verdict = escape(str(r.get("verdict", "")))
        title = escape(
            f"wave {r.get('wave')} sent for {r.get('due_on')}: lift {r['lift'] * 100:+.2f} pp "
            f"({r.get('verdict_text', '')})"
        )
        if r.get("lift_low") is not None and r.get("lift_high") is not None:
            parts.append(
                f'<line class="whisker {verdict}" x1="{x(i):.1f}" x2="{x(i):.1f}" '
                f'y1="{y(r["lift_low"]):.1f}" y2="{y(r["lift_high"]):.1f}"/>'
            )
        parts.append(
            f'<circle class="dot {verdict}" cx="{x(i):.1f}" cy="{y(r["lift"]):.1f}" r="3.5">'
            f"<title>{title}</title></circle>"
        )
        if i in labelled:
            parts.append(
                f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{escape(str(r.get('due_on', ''))[5:])}</text>"
            )
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
        "wave due day 波次日期 · lift in percentage points 提升（百分点）</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))
