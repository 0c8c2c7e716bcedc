"""The admin report: per slot and cell, each variant's reward rate with a 95% interval, and
the lift of personalization against the holdout, as JSON or as an HTML page with inline SVG
plots (no plotting dependency).

The numbers are the robust aggregates the priors are built from (source buckets capped, see
:mod:`.aggregate`), without the publication's noise and without decay: the site owner's own
view of all the data kept. A rate is ``reward / shown`` (exposures now, rewards later), so it
is unbiased once the attribution windows of the exposures have closed.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping
from typing import Any

from .aggregate import SlotSums
from .models import SiteDeclaration
from .storage import SiteState

__all__ = ["site_report", "render_html", "rate"]

ROW_H = 26
LABEL_W = 170
PLOT_W = 420
Z95 = 1.959963984540054


def rate(reward: float, shown: float) -> dict[str, float | None]:
    """Mean reward per exposure with its 95% Wilson score interval: inside [0, 1] and honest
    on few exposures and on rates near 0, where click rates live.

    >>> rate(10.0, 100.0)["rate"]
    0.1
    >>> [round(rate(0.0, 20.0)[k], 3) for k in ("low", "high")]
    [0.0, 0.161]
    >>> rate(0.0, 0.5)["rate"] is None
    True
    """
    if shown < 1.0:
        return {"n": max(shown, 0.0), "rate": None, "low": None, "high": None, "se": None}
    p = min(max(reward / shown, 0.0), 1.0)
    z2 = Z95 * Z95 / shown
    centre = (p + z2 / 2) / (1 + z2)
    half = Z95 * math.sqrt(p * (1 - p) / shown + z2 / (4 * shown)) / (1 + z2)
    se = math.sqrt(max(p * (1 - p), 0.25 / shown) / shown)  # for the lift's normal interval
    return {"n": shown, "rate": p, "low": max(centre - half, 0.0),
            "high": min(centre + half, 1.0), "se": se}  # fmt: skip


def _cell_report(variants: Mapping[str, list[float]], holdout: list[float]) -> dict[str, Any]:
    shown = sum(s for s, _ in variants.values())
    reward = sum(r for _, r in variants.values())
    treated, held = rate(reward, shown), rate(holdout[1], holdout[0])
    lift = None
    if treated["rate"] is not None and held["rate"] is not None:
        diff = treated["rate"] - held["rate"]
        se = math.hypot(treated["se"], held["se"])
        lift = {"value": diff, "low": diff - Z95 * se, "high": diff + Z95 * se}
    return {
        "variants": {v: rate(r, s) for v, (s, r) in variants.items()},
        "treated": treated,
        "holdout": held,
        "lift": lift,
    }


def site_report(
    site: str,
    declaration: SiteDeclaration,
    totals: Mapping[str, SlotSums],
    state: SiteState,
    uploads: int,
) -> dict[str, Any]:
    """Per declared slot and cell (``*`` first): rates, holdout and lift."""
    slots = {}
    for slot, variants in declaration.slots.items():
        sums = totals.get(slot, SlotSums()).with_star()
        cells = {}
        for cell in declaration.cell_ids():
            if cell != "*" and cell not in sums.variants and cell not in sums.holdout:
                continue
            counts = sums.variants.get(cell, {})
            cells[cell] = _cell_report(
                {v: counts.get(v, [0.0, 0.0]) for v in variants}, sums.holdout.get(cell, [0.0, 0.0])
            )
        slots[slot] = {"cells": cells}
    return {
        "site": site,
        "generated_at": time.time(),
        "uploads": uploads,
        "prior": {"version": state.current_version, "frozen": state.frozen},
        "slots": slots,
    }


def _fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if percent else f"{value:,.0f}"


AXIS_ENDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # click rates are often a few percent


def _interval(est: dict) -> str:
    return "–" if est["low"] is None else f"{_fmt(est['low'])} – {_fmt(est['high'])}"


def _axis_end(rows: list[tuple[str, dict | None, str]]) -> float:
    """The smallest round axis end that holds every interval, so small rates stay readable."""
    highs = [est["high"] for _, est, _ in rows if est and est.get("high") is not None]
    return next((end for end in AXIS_ENDS if max(highs, default=1.0) <= end), 1.0)


def _chart(rows: list[tuple[str, dict | None, str]]) -> str:
    """Horizontal dots with 95% whiskers on a shared axis from 0 to a round end."""
    height = ROW_H * len(rows) + 30
    end = _axis_end(rows)
    x = lambda v: LABEL_W + max(0.0, min(1.0, v / end)) * PLOT_W  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" '
        f'height="{height}" role="img" font-family="system-ui, sans-serif" font-size="12">'
    ]
    for share in (0, 0.25, 0.5, 0.75, 1.0):
        tx = x(share * end)
        parts.append(
            f'<line x1="{tx:.1f}" y1="4" x2="{tx:.1f}" y2="{height - 22}" stroke="#ddd"/>'
            f'<text x="{tx:.1f}" y="{height - 8}" text-anchor="middle" fill="#666">'
            f"{100 * share * end:g}%</text>"
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
    star = rep["cells"]["*"]
    rows: list[tuple[str, dict | None, str]] = [
        (f"{name} (n={_fmt(est['n'], False)})", est, "#2864c8")
        for name, est in star["variants"].items()
    ]
    rows.append((f"holdout (n={_fmt(star['holdout']['n'], False)})", star["holdout"], "#888"))
    rows.append(("all treated", star["treated"], "#2a9d5b"))
    lift = star["lift"]
    lift_text = (
        "no holdout data yet"
        if lift is None
        else f"{100 * lift['value']:+.1f} points [{100 * lift['low']:+.1f}, "
        f"{100 * lift['high']:+.1f}] (95%)"
    )
    table = "".join(
        f"<tr><td>{html.escape(cell)}</td><td>{html.escape(name)}</td>"
        f"<td>{_fmt(est['n'], False)}</td><td>{_fmt(est['rate'])}</td>"
        f"<td>{_interval(est)}</td></tr>"
        for cell, rep_cell in rep["cells"].items()
        for name, est in rep_cell["variants"].items()
    )
    return (
        f"<section><h2>Slot <code>{html.escape(slot)}</code></h2>"
        "<p>All visitors (cell <code>*</code>): exposures and reward rate per variant. "
        f"Lift of personalization over the holdout: <strong>{lift_text}</strong>.</p>"
        f"{_chart(rows)}"
        "<table><thead><tr><th>cell</th><th>variant</th><th>exposures</th><th>reward rate</th>"
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
            f"<p>{rep['uploads']} uploads. Prior version {prior['version'] or '–'} ({state}).</p>"
        )
        if not rep["slots"]:
            body.append("<p>No slots declared yet.</p>")
        body.extend(_slot_html(slot, r) for slot, r in rep["slots"].items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>microadjust report</title><style>"
        "body{font:14px system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 2em}td,th{padding:2px 10px;"
        "border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child"
        "{text-align:left}</style></head><body>"
        + "".join(body)
        + "<p><small>Rates and lift come from the stored aggregates, each source capped, "
        "without the noise added to published priors; a rate's interval is Wilson's, the "
        "lift's a normal approximation."
        "</small></p></body></html>"
    )
