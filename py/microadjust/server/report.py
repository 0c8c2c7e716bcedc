"""The admin report: per slot and variant, decisions and reward rates with 95% intervals, lift
against the holdout, and off-policy estimates of the current policy, as JSON or as an HTML page
with inline SVG plots (no plotting dependency).

Every number comes from noisy aggregates (local differential privacy), so the intervals
include the added noise; with few uploads they are wide, by design.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

from .aggregate import slot_report

__all__ = ["site_report", "render_html"]

ROW_H = 26
LABEL_W = 170
PLOT_W = 420


def site_report(site: str, aggregates: Mapping[str, tuple[dict, int, float]], state: dict) -> dict:
    """The report of one site from its aggregates (see :func:`aggregate.slot_report`)."""
    return {
        "site": site,
        "generated_at": time.time(),
        "prior": {"version": state.get("current_version"), "frozen": state.get("frozen")},
        "slots": {slot: slot_report(data, n) for slot, (data, n, _) in aggregates.items()},
    }


def _fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:,.0f}"


def _chart(rows: list[tuple[str, dict | None, str]]) -> str:
    """Horizontal dots with 95% whiskers on a shared 0..100% axis."""
    height = ROW_H * len(rows) + 30
    x = lambda v: LABEL_W + max(0.0, min(1.0, v)) * PLOT_W  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" '
        f'height="{height}" role="img" font-family="system-ui, sans-serif" font-size="12">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        tx = x(tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="4" x2="{tx:.1f}" y2="{height - 22}" stroke="#ddd"/>'
            f'<text x="{tx:.1f}" y="{height - 8}" text-anchor="middle" fill="#666">'
            f"{int(tick * 100)}%</text>"
        )
    for i, (label, est, color) in enumerate(rows):
        y = 8 + i * ROW_H + ROW_H / 2
        parts.append(
            f'<text x="{LABEL_W - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>'
        )
        if not est or est.get("rate", est.get("value")) is None:
            parts.append(f'<text x="{x(0) + 4:.1f}" y="{y + 4:.1f}" fill="#999">no data</text>')
            continue
        value = est.get("rate", est.get("value"))
        lo, hi = est["low"], est["high"]
        parts.append(
            f'<line x1="{x(lo):.1f}" y1="{y:.1f}" x2="{x(hi):.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<rect x="{x(0):.1f}" y="{y - 6:.1f}" width="{x(value) - x(0):.1f}" height="12" '
            f'fill="{color}" opacity="0.25"/>'
            f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="4" fill="{color}">'
            f"<title>{html.escape(label)}: {_fmt(value)} [{_fmt(lo)}, {_fmt(hi)}]</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _slot_html(slot: str, rep: dict[str, Any]) -> str:
    rows: list[tuple[str, dict | None, str]] = [
        (f"{name} (n={_fmt(est['n'], False)})", est, "#2864c8")
        for name, est in rep["variants"].items()
    ]
    rows.append((f"holdout (n={_fmt(rep['holdout']['n'], False)})", rep["holdout"], "#888"))
    rows.append(("all treated", rep["treated"], "#2a9d5b"))
    ope = rep["current_policy"]
    rows.append(("current policy (SNIPS)", ope and ope["snips"], "#c0603a"))
    rows.append(("current policy (IPS)", ope and ope["ips"], "#c0603a"))
    lift = rep["lift"]
    lift_text = (
        "no holdout data yet"
        if lift is None
        else f"{100 * lift['value']:+.1f} points [{100 * lift['low']:+.1f}, "
        f"{100 * lift['high']:+.1f}] (95%)"
    )
    table = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(est['n'], False)}</td>"
        f"<td>{_fmt(est['rate'])}</td><td>{_fmt(est['low'])} – {_fmt(est['high'])}</td></tr>"
        for name, est in rep["variants"].items()
    )
    return (
        f"<section><h2>Slot <code>{html.escape(slot)}</code></h2>"
        f"<p>{rep['uploads']} uploads, about {_fmt(rep['decisions'], False)} decisions with a "
        "known outcome (shown, then rewarded or not within the attribution window). "
        f"Lift of personalization over the holdout: <strong>{lift_text}</strong>.</p>"
        f"{_chart(rows)}"
        "<table><thead><tr><th>variant</th><th>decisions</th><th>reward rate</th>"
        f"<th>95% interval</th></tr></thead><tbody>{table}</tbody></table></section>"
    )


def render_html(reports: list[dict[str, Any]]) -> str:
    """A self-contained page (inline CSS and SVG) for the reports of one or more sites."""
    body = []
    for rep in reports:
        prior = rep["prior"]
        state = "frozen" if prior["frozen"] else "publishing automatically"
        body.append(
            f"<h1>Site <code>{html.escape(rep['site'])}</code></h1>"
            f"<p>Prior version {prior['version'] or '–'} ({state}).</p>"
        )
        if not rep["slots"]:
            body.append("<p>No uploads yet.</p>")
        body.extend(_slot_html(slot, r) for slot, r in rep["slots"].items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>microadjust report</title><style>"
        "body{font:14px system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 2em}td,th{padding:2px 10px;"
        "border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child"
        "{text-align:left}</style></head><body>"
        + "".join(body)
        + "<p><small>Reward rates, lift and off-policy values come from aggregates with "
        "local differential privacy noise; intervals are normal approximations that include "
        "that noise.</small></p></body></html>"
    )
