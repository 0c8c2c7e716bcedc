"""Fleet benchmark: lift as deployed (an engine per browser, learning across visitors through the
sync server) against one central engine over all raw data, on identical visitors and clicks.

A simulated site gets ``visitors_per_day`` visitors. Each visitor has 1-6 page views (most a
few minutes apart, some hours later) and its own engine, configured as the worker configures it
(``session.fresh_engine`` with the page's config) and kept across its page views. On every page
view, for every slot on the page, the visitor's engine decides with the worker's context; the
decision is seen (the attribution rule) with probability ``SEEN``, and a seen decision is clicked
when the visitor's common random draw falls under the true click rate of the chosen variant in
the visitor's cell. A click rewards 1 at once; a seen decision earns 0 only when its 30-minute
attribution window closes, i.e. only if the visitor makes a page view after that (as the worker
does), else it stays open forever. The deployed path uses the real :class:`SyncClient`: it
installs the latest published priors before each slot's first decision on a page, records
exposures when seen and rewards when clicked, and uploads when the page is hidden; the server
publishes priors ``--publications-per-day`` times a day; new visitors start from the latest.

Policies, all on the same visitors, the same seen flags and the same click draws:

- ``default``: always the default variant; ``uniform``: a uniformly random variant;
- ``deployed:aggregate`` (exact bounded counts, central DP noise at publication),
  ``deployed:local`` (device noise, epsilon 1), ``deployed:exact`` (no noise at all);
- ``central``: one Engine over every decision, clicks at once, no-clicks at window close;
- ``oracle``: the best variant of each cell, in hindsight (it knows the shift too).

Printed per site shape and size: CTR (clicks per seen decision), lift over ``default``, and the
share of the central engine's lift. Site shapes: ``segments`` (cells prefer different variants),
``shift`` (those preferences change halfway), ``slots`` (three slots: two contextual, one not),
``flat`` (one slot where context does not matter).

The server is the real sync app (``create_app``, SQLite in a temporary directory) through
Starlette's TestClient, on the simulation's clock; each visitor has an address of its own
(source buckets), and publications (each releasing one noisy increment) are spread evenly
over the day.

Run: ``.venv/bin/python bench/fleet.py [--quick] [--sizes 1000,10000,100000] [--max-seconds S]
[--seed 0,1,3,4]`` (several seeds: each run's table, then the shares pooled over them).
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from poison import SIM_CLIENT, with_simulated_clients  # noqa: E402  (an address per visitor)

from microadjust import Engine  # noqa: E402
from microadjust.browser.session import fresh_engine  # noqa: E402
from microadjust.browser.site_priors import PriorsDocument, cell_of  # noqa: E402
from microadjust.browser.sync_client import SyncClient  # noqa: E402
from microadjust.server.api import create_app  # noqa: E402
from microadjust.server.config import SyncSettings  # noqa: E402
from microadjust.server.models import SiteDeclaration  # noqa: E402
from microadjust.server.release import epsilon_of  # noqa: E402

DAY = 86_400.0
WINDOW_S = 1800.0
SEEN = 0.8  # share of decisions the attribution rule counts as seen
PAGE_CONFIG = {"policy": "auto", "holdout": 0.05, "attribution_window_s": WINDOW_S}
DEVICES = (("desktop", 0.45), ("mobile", 0.45), ("tablet", 0.10))
REFERRERS = (("direct", 0.30), ("search", 0.35), ("social", 0.25), ("other", 0.10))
PAGES = (0.40, 0.20, 0.15, 0.10, 0.08, 0.07)  # P(1..6 page views)
CELLS = {
    "device": ["desktop", "mobile", "tablet"],
    "referrer": ["direct", "search", "social", "internal"],
    "returning": ["false", "true"],
}
SERVER_HALF_LIFE_DAYS = SyncSettings.__dataclass_fields__["half_life_days"].default
SITE = "bench"
KEY = "bench-upload-key"


# --- the site: slots and true click rates per cell -----------------------------------------


@dataclass(frozen=True)
class SlotShape:
    """A slot, its variants and its true click rates per cell (before and after a shift)."""

    name: str
    variants: tuple[str, ...]
    rates: dict[str, dict[str, float]]  # cell -> variant -> click rate
    shifted: dict[str, dict[str, float]]  # the same after the shift

    def rate(self, cell: str, variant: str, after_shift: bool) -> float:
        return (self.shifted if after_shift else self.rates)[cell][variant]


@dataclass(frozen=True)
class SiteShape:
    name: str
    slots: tuple[SlotShape, ...]


def all_cells() -> list[str]:
    """Every cell a simulated visitor can be in (page 1: an external referrer, later: internal)."""
    out = []
    for device, _ in DEVICES:
        for referrer, _ in REFERRERS:
            out.append(cell_of(CELLS, {"device": device, "referrer": referrer, "returning": False}))
        out.append(cell_of(CELLS, {"device": device, "referrer": "internal", "returning": True}))
    return out


def slot_shape(name: str, variants: tuple[str, ...], contextual: bool, seed: int) -> SlotShape:
    """Click rates: about 3-4.5 % everywhere, the cell's favourite variant about 7.5 %."""
    rng = np.random.default_rng(seed)

    def table() -> dict[str, dict[str, float]]:
        overall = variants[int(rng.integers(1, len(variants)))]
        out = {}
        for cell in all_cells():
            favourite = variants[int(rng.integers(len(variants)))] if contextual else overall
            out[cell] = {
                v: (0.075 if v == favourite else 0.045 if v == "default" else 0.03)
                + float(rng.uniform(-0.005, 0.005))
                for v in variants
            }
        return out

    return SlotShape(name, variants, table(), table())


def site_shapes() -> dict[str, SiteShape]:
    cta = ("default", "quiz", "deal", "free-shipping")
    headline = ("default", "story", "deal")
    hero = ("default", "beans", "warm")
    segments = slot_shape("cta", cta, contextual=True, seed=1)
    return {
        "segments": SiteShape("segments", (segments,)),
        "shift": SiteShape("shift", (segments,)),
        "slots": SiteShape(
            "slots",
            (
                slot_shape("cta", cta, contextual=True, seed=2),
                slot_shape("headline", headline, contextual=True, seed=3),
                slot_shape("hero", hero, contextual=False, seed=4),
            ),
        ),
        "flat": SiteShape("flat", (slot_shape("cta", cta, contextual=False, seed=5),)),
    }


# --- visitors: everything random about them is drawn once, shared by every policy ---------


@dataclass(frozen=True)
class Page:
    t: float
    context: dict[str, Any]  # what the worker's engine sees
    seen: tuple[bool, ...]  # per slot
    click_draw: tuple[float, ...]  # per slot: clicked iff draw < true rate
    pick_draw: tuple[float, ...]  # per slot: the uniform policy's choice


@dataclass(frozen=True)
class Visitor:
    index: int
    pages: tuple[Page, ...]


def visitors(n: int, slots: int, per_day: float, seed: int) -> Iterator[Visitor]:
    """``n`` visitors in arrival order; the same for every policy (common random numbers)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        start = i * DAY / per_day + float(rng.uniform(0, DAY / per_day))
        device = DEVICES[_pick(rng, DEVICES)][0]
        entry = REFERRERS[_pick(rng, REFERRERS)][0]
        count = 1 + int(rng.choice(len(PAGES), p=PAGES))
        t, pages = start, []
        for k in range(count):
            if k:
                late = rng.random() < 0.15
                t += float(rng.uniform(1800, 7200) if late else rng.uniform(20, 240))
            hour = int(t % DAY // 3600)
            context = {
                "device": device,
                "referrer": entry if k == 0 else "internal",
                "hour": hour,
                "weekday": int(t // DAY) % 7,
                "language": "en",
                "page": "product" if k else "home",
                "dwell_s": 0.0,
                "scroll_depth": 0.0,
                "clicks": 0,
                "idle_s": 0.0,
                "visits": k + 1,
                "returning": k > 0,
            }
            pages.append(
                Page(
                    t,
                    context,
                    tuple(bool(rng.random() < SEEN) for _ in range(slots)),
                    tuple(float(rng.random()) for _ in range(slots)),
                    tuple(float(rng.random()) for _ in range(slots)),
                )
            )
        yield Visitor(i, tuple(pages))


def _pick(rng: np.random.Generator, weighted: tuple[tuple[str, float], ...]) -> int:
    return int(rng.choice(len(weighted), p=[w for _, w in weighted]))


# --- the server: the real sync app, on a simulated clock ---------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """What the bench changes in the server's settings (the rest are its defaults)."""

    half_life_days: float
    publications_per_day: float = (
        DAY / SyncSettings.__dataclass_fields__["publish_interval_s"].default
    )
    max_shown: int = SyncSettings.__dataclass_fields__["max_shown"].default
    rho: float = SyncSettings.__dataclass_fields__["rho_per_release"].default
    noise: bool = True  # False: no central noise at all
    priors_refresh_s: float = 300.0  # how often the simulated browsers' priors are re-fetched


class SyncServer:
    """The real sync app (``create_app``) through Starlette's TestClient, with SQLite in a
    temporary directory and a clock the simulation sets."""

    def __init__(self, slots: dict[str, tuple[str, ...]], settings: ServerSettings, seed: int):
        self.settings, self.now = settings, 0.0
        self.tmp = tempfile.TemporaryDirectory(
            prefix="fleet-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
        rho = settings.rho
        if not settings.noise:  # a budget so large that sigma is ~1e-6 (rho = inf breaks JSON)
            rho = 1e12
        declaration = SiteDeclaration(
            key=KEY, slots={k: list(v) for k, v in slots.items()}, cells=CELLS
        )
        app = create_app(
            SyncSettings(
                sites={SITE: declaration},
                data_dir=Path(self.tmp.name),
                max_shown=settings.max_shown,
                rate_per_s=1e9,  # the limiter runs on wall-clock time, not the simulated one
                half_life_days=settings.half_life_days,
                publish_interval_s=DAY / settings.publications_per_day,
                rho_per_release=rho,
                refresh_s=0.0,
            ),
            clock=lambda: self.now,
            rng=np.random.default_rng(seed),
        )
        self.http = TestClient(with_simulated_clients(app))
        self.http.__enter__()  # runs the app's lifespan: migrations
        self.refused = 0

    def upload(self, body: dict[str, Any], source: int, now: float) -> bool:
        """POST one body from visitor ``source``; True if the server took it."""
        self.now = now
        answer = self.http.post(
            f"/v1/sites/{SITE}/uploads",
            json=body,
            headers={"X-Microadjust-Key": KEY, SIM_CLIENT.decode(): _address(source)},
        )
        if answer.status_code != 200:
            self.refused += 1
        return answer.status_code == 200

    def priors(self, now: float) -> dict[str, Any]:
        """GET the priors (publishing first when a publication is due)."""
        self.now = now
        answer = self.http.get(
            f"/v1/sites/{SITE}/priors", headers={SIM_CLIENT.decode(): "10.0.0.1"}
        )
        answer.raise_for_status()
        return answer.json()

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.tmp.cleanup()


def _address(visitor: int) -> str:
    return f"10.{visitor >> 16 & 255}.{visitor >> 8 & 255}.{visitor & 255}"


# --- policies ------------------------------------------------------------------------------


class Policy:
    """Chooses for one slot of one page view; told what was seen, clicked, and when."""

    def visitor(self, v: Visitor) -> Any:
        return None

    def choose(self, state: Any, slot: SlotShape, page: Page, k: int) -> tuple[str, Any]:
        raise NotImplementedError

    def seen(self, state: Any, slot: SlotShape, token: Any, page: Page) -> None:
        pass

    def clicked(self, state: Any, token: Any, t: float) -> None:
        pass

    def page_start(self, state: Any, page: Page) -> None:
        pass

    def page_end(self, state: Any, v: Visitor, page: Page) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def finish(self) -> str:
        """Done: release what the policy holds; a note for the table."""
        return ""


class Default(Policy):
    def choose(self, state, slot, page, k):
        return "default", None


class Uniform(Policy):
    def choose(self, state, slot, page, k):
        return slot.variants[int(page.pick_draw[k] * len(slot.variants))], None


class Oracle(Policy):
    def __init__(self, shift_at: float | None):
        self.shift_at = shift_at

    def choose(self, state, slot, page, k):
        after = self.shift_at is not None and page.t >= self.shift_at
        rates = (slot.shifted if after else slot.rates)[cell_of(CELLS, page.context)]
        return max(rates, key=rates.__getitem__), None


class Central(Policy):
    """One engine over all raw data: clicks at once, a seen no-click at its window's close."""

    def __init__(self, seed: int):
        self.engine = Engine(seed=seed, max_pending=1_000_000, **PAGE_CONFIG)
        self.closes: list[tuple[float, str]] = []
        self.clicked_ids: set[str] = set()

    def choose(self, state, slot, page, k):
        d = self.engine.rank(page.context, list(slot.variants), slot=slot.name, now=page.t)
        return d.action, d.event_id

    def seen(self, state, slot, token, page):
        heapq.heappush(self.closes, (page.t + WINDOW_S - 1e-6, token))

    def clicked(self, state, token, t):
        self.tick(t)
        self.engine.reward(token, 1.0, now=t)
        self.clicked_ids.add(token)

    def tick(self, now):
        while self.closes and self.closes[0][0] <= now:
            t, eid = heapq.heappop(self.closes)
            if eid in self.clicked_ids:
                self.clicked_ids.discard(eid)
            else:
                self.engine.reward(eid, 0.0, now=t)


@dataclass
class Device:
    """One visitor's browser: its engine, its sync client, its open seen decisions."""

    engine: Engine
    sync: SyncClient
    open: dict[str, float] = field(default_factory=dict)  # seen event id -> decided at
    installed: set[str] = field(default_factory=set)  # slots with priors on this page


class Deployed(Policy):
    """An engine per browser, learning across visitors through SyncClient and the server."""

    def __init__(self, sync: dict[str, Any], server: SyncServer, seed: int):
        self.sync_config = {"site": SITE, "key": KEY, "upload": True, **sync}
        self.server = server
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.next_fetch = 0.0
        self.priors: PriorsDocument | None = None

    def visitor(self, v):
        engine = fresh_engine({**PAGE_CONFIG, "seed": self.seed * 1_000_003 + v.index})
        sync = SyncClient()
        sync.configure(self.sync_config, consent=True)
        return Device(engine, sync)

    @staticmethod
    def close_windows(device: Device, now: float) -> None:
        """Seen decisions whose window closed unrewarded learn 0 (the worker does this at
        init and with every batch of page events)."""
        for eid, t in list(device.open.items()):
            if now - t >= WINDOW_S:
                del device.open[eid]
                closed = t + WINDOW_S - 1e-6
                device.engine.reward(eid, 0.0, now=closed)
                device.sync.record_reward(eid, 0.0, now=closed)

    def page_start(self, device, page):
        self.close_windows(device, page.t)
        if self.priors is not None:  # fetched while Pyodide boots
            device.sync.load_priors(self.priors)
        device.installed = set()

    def choose(self, device, slot, page, k):
        if slot.name not in device.installed:
            device.sync.install_priors(device.engine, slot.name, page.context)
            device.installed.add(slot.name)
        d = device.engine.rank(page.context, list(slot.variants), slot=slot.name, now=page.t)
        return d.action, d

    def seen(self, device, slot, d, page):
        device.open[d.event_id] = page.t
        device.sync.record_shown(
            d.event_id,
            slot.name,
            d.action,
            variants=slot.variants,
            holdout=d.holdout,
            context=page.context,
            now=page.t,
        )

    def clicked(self, device, d, t):
        self.close_windows(device, t)
        del device.open[d.event_id]
        device.engine.reward(d.event_id, 1.0, now=t)
        device.sync.record_reward(d.event_id, 1.0, now=t)

    def page_end(self, device, v, page):
        """The page is hidden: the worker sends what it has (sendBeacon / keepalive fetch)."""
        while (body := device.sync.next_upload(self.rng)) is not None:
            if self.server.upload(body, source=v.index, now=page.t + 60.0):
                device.sync.acknowledged(body["batch_id"])
            else:
                device.sync.rejected(body["batch_id"])

    def tick(self, now):
        """Browsers fetch the priors at every page load (cached for a while)."""
        if now >= self.next_fetch:
            self.priors = PriorsDocument.parse(self.server.priors(now))
            self.next_fetch = now + self.server.settings.priors_refresh_s

    def finish(self):
        refused = self.server.refused
        self.server.close()
        return f"{refused} uploads refused" if refused else ""


# --- the simulation ------------------------------------------------------------------------


@dataclass
class Outcome:
    """Clicks and seen decisions per visitor (by arrival), so runs cut short compare fairly."""

    clicks: np.ndarray  # per visitor: [before the shift, after it] (all "before" without one)
    seen: np.ndarray
    visitors: int = 0
    seconds: float = 0.0
    note: str = ""

    def ctr(self, visitors: int, period: slice = slice(None)) -> float:
        """Clicks per seen decision of the first ``visitors`` visitors (in ``period``: 0 before
        the shift, 1 after it)."""
        seen = self.seen[:visitors, period].sum()
        return float(self.clicks[:visitors, period].sum() / seen) if seen else float("nan")


def simulate(
    policy: Policy, site: SiteShape, n: int, args: argparse.Namespace, deadline: float
) -> Outcome:
    """Run ``n`` visitors through ``policy`` in time order (page views interleave)."""
    shift_at = n / args.per_day * DAY / 2 if site.name == "shift" else None
    out = Outcome(np.zeros((n, 2), dtype=int), np.zeros((n, 2), dtype=int))
    started = time.perf_counter()
    queue: list[tuple[float, int, int, Visitor, Any]] = []
    arrivals = visitors(n, len(site.slots), args.per_day, args.seed)
    pending = next(arrivals, None)
    while queue or pending is not None:
        if pending is not None and (not queue or pending.pages[0].t <= queue[0][0]):
            v, state, k = pending, policy.visitor(pending), 0
            pending = next(arrivals, None)
            out.visitors += 1
            if time.perf_counter() > deadline:
                pending = None  # out of time: finish the visitors already here
        else:
            _, _, k, v, state = heapq.heappop(queue)
        page = v.pages[k]
        policy.tick(page.t)
        policy.page_start(state, page)
        after = shift_at is not None and page.t >= shift_at
        for j, slot in enumerate(site.slots):
            variant, token = policy.choose(state, slot, page, j)
            if not page.seen[j]:
                continue
            out.seen[v.index, int(after)] += 1
            policy.seen(state, slot, token, page)
            if page.click_draw[j] < slot.rate(cell_of(CELLS, page.context), variant, after):
                out.clicks[v.index, int(after)] += 1
                policy.clicked(state, token, page.t + 5.0)
        policy.page_end(state, v, page)
        if k + 1 < len(v.pages):
            heapq.heappush(queue, (v.pages[k + 1].t, v.index, k + 1, v, state))
    out.note = policy.finish()
    out.seconds = time.perf_counter() - started
    return out


def policies(site: SiteShape, n: int, args: argparse.Namespace) -> dict[str, Callable[[], Policy]]:
    slots = {s.name: s.variants for s in site.slots}
    shift_at = n / args.per_day * DAY / 2 if site.name == "shift" else None
    settings = ServerSettings(
        args.half_life_days, args.publications_per_day, args.max_shown, args.rho
    )

    def deployed(sync: dict[str, Any], noise: bool = True) -> Callable[[], Policy]:
        def make() -> Policy:
            server = SyncServer(slots, replace(settings, noise=noise), args.seed)
            return Deployed({**args.sync, **sync}, server, args.seed)

        return make

    table: dict[str, Callable[[], Policy]] = {
        "default": Default,
        "uniform": Uniform,
        "central": lambda: Central(args.seed),
        "oracle": lambda: Oracle(shift_at),
        "deployed:aggregate": deployed({"mode": "aggregate"}),
        "deployed:local": deployed({"mode": "local", "epsilon": 1.0}),
        "deployed:exact": deployed({"mode": "aggregate"}, noise=False),
    }
    if args.policies:
        table = {k: v for k, v in table.items() if k in args.policies}
    return table


def seed_list(text: str) -> list[int]:
    """``--seed``: one seed or several, comma-separated."""
    try:
        seeds = [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a seed or comma-separated seeds such as 0,1,3,4, got {text!r}"
        ) from None
    if any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size, two shapes")
    parser.add_argument("--sizes", default="1000,10000,100000", help="visitor counts")
    parser.add_argument("--shapes", default="segments,shift,slots,flat")
    parser.add_argument("--policies", default="", help="comma-separated subset")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="per policy and size")
    parser.add_argument("--per-day", type=float, default=5000.0, help="visitors per day")
    parser.add_argument(
        "--half-life-days", type=float, default=SERVER_HALF_LIFE_DAYS, help="server decay"
    )
    parser.add_argument(
        "--publications-per-day",
        type=float,
        default=ServerSettings.publications_per_day,
        help="publications (released increments) a day",
    )
    parser.add_argument(
        "--max-shown",
        type=int,
        default=ServerSettings.max_shown,
        help="the server's per-visitor bound (exposures and reward units per slot and period)",
    )
    parser.add_argument(
        "--rho",
        type=float,
        default=ServerSettings.rho,
        help="the server's rho_per_release: zCDP of one visitor-period over everything published",
    )
    parser.add_argument(
        "--seed",
        type=seed_list,
        default=[0],
        help="the simulation's seed; several (e.g. 0,1,3,4) also print the shares pooled over them",
    )
    parser.add_argument(
        "--sync",
        action="append",
        default=[],
        help="config.sync override for the deployed policies, e.g. site_prior_n=100",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.shapes = "1000", "segments,slots"
    args.policies = [p for p in args.policies.split(",") if p]
    args.sync = {k: float(v) for k, v in (item.split("=", 1) for item in args.sync)}
    seeds = args.seed
    shapes = site_shapes()
    print(
        f"# fleet benchmark, {datetime.date.today()}: {args.per_day:.0f} visitors/day, server "
        f"half-life {args.half_life_days:g} days, {args.publications_per_day:g} publications/day, "
        f"max_shown {args.max_shown}, rho {args.rho:g} per visitor-period "
        f"(epsilon {epsilon_of(args.rho):.1f} at delta 1e-5)",
        flush=True,
    )
    if args.sync:
        print(f"# config.sync overrides: {args.sync}")
    with threadpool_limits(1):
        for name in args.shapes.split(","):
            site = shapes[name]
            for n in (int(s) for s in args.sizes.split(",")):
                runs = [report(site, n, argparse.Namespace(**{**vars(args), "seed": seed}))
                        for seed in seeds]  # fmt: skip
                if len(runs) > 1:
                    report_pooled(site, n, seeds, runs)


def report(site: SiteShape, n: int, args: argparse.Namespace) -> dict[str, float]:
    """Run every policy, then print the table over the visitors every policy reached; returns
    each policy's CTR there."""
    results: dict[str, Outcome] = {}
    for label, make in policies(site, n, args).items():
        deadline = time.perf_counter() + args.max_seconds
        results[label] = simulate(make(), site, n, args, deadline)
        print(f"# {label}: {results[label].visitors:,} visitors", file=sys.stderr, flush=True)
    reached = min(o.visitors for o in results.values())
    cut = "" if reached == n else f" (the first {reached:,} reached by every policy in time)"
    print(f"\n## {site.name}, {n:,} visitors, seed {args.seed}{cut}\n")
    shifted = site.name == "shift"
    halves = " CTR before / after the shift |" if shifted else ""
    print(f"| policy | CTR | lift over default | share of central's lift |{halves} s | note |")
    print("|---|---|---|---|---|---|" + ("---|" if shifted else ""))
    base = results["default"].ctr(reached) if "default" in results else None
    central = results["central"].ctr(reached) if "central" in results else None
    for label, outcome in results.items():
        ctr = outcome.ctr(reached)
        lift = share = "–"
        if base is not None and label != "default":
            lift = f"{ctr / base - 1:+.1%}"
        if base is not None and central is not None and central != base:
            share = f"{(ctr - base) / (central - base) + 0.0:.2f}"  # no -0.00
        before, after = (outcome.ctr(reached, slice(k, k + 1)) for k in (0, 1))
        halves = f" {before:.2%} / {after:.2%} |" if shifted else ""
        print(
            f"| {label} | {ctr:.2%} | {lift} | {share} |{halves} {outcome.seconds:.0f} | "
            f"{outcome.note} |"
        )
    sys.stdout.flush()
    return {label: outcome.ctr(reached) for label, outcome in results.items()}


def report_pooled(site: SiteShape, n: int, seeds: list[int], runs: list[dict[str, float]]) -> None:
    """The shares pooled over seeds: summed lifts over ``default`` / the central engine's
    summed lifts. Where the central engine gains little, one run's share swings widely
    (README); pooling weighs each run by how much there was to gain."""
    if "default" not in runs[0] or "central" not in runs[0]:
        return
    gain = sum(run["central"] - run["default"] for run in runs)
    print(f"\n## {site.name}, {n:,} visitors, pooled over seeds {', '.join(map(str, seeds))}\n")
    print("| policy | mean CTR | pooled share of central's lift | share per seed |")
    print("|---|---|---|---|")
    for label in runs[0]:
        lifts = [run[label] - run["default"] for run in runs]
        per_seed = " / ".join(
            f"{lift / (run['central'] - run['default']) + 0.0:.2f}"
            if run["central"] != run["default"]
            else "–"
            for lift, run in zip(lifts, runs, strict=True)
        )
        pooled = f"{sum(lifts) / gain + 0.0:.2f}" if gain else "–"
        mean = sum(run[label] for run in runs) / len(runs)
        print(f"| {label} | {mean:.2%} | {pooled} | {per_seed} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
