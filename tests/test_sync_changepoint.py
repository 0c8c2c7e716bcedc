"""A publication forgets the increments before a significant change of the site, and only then."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette suggests httpx2, which is not needed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from test_sync_api import SHOP, admin, make_upload, post, priors, settings

from microadjust.server.api import create_app
from microadjust.server.changepoint import since_last_change
from microadjust.server.release import Increment

HOUR = 3600.0
SIGMA = 2.0  # the release noise of one slot at rho 8 and max_shown 4 (twice the default's)
CELLS = ("*", "device=desktop", "device=mobile")


def increment(
    seq: int,
    rates: dict[str, dict[str, float]],
    rng: np.random.Generator,
    shown: dict[str, int] | None = None,
):
    """One noisy increment of an hour: 120 exposures (or ``shown[cell]``) per cell and
    variant at ``rates``."""
    counts: dict[str, dict[str, list[float]]] = {}
    for cell in CELLS[1:]:
        counts[cell] = {}
        n = (shown or {}).get(cell, 120)
        for variant, rate in rates[cell].items():
            counts[cell][variant] = [float(n), float(rng.binomial(n, rate))]
    counts["*"] = {
        v: [sum(counts[c][v][0] for c in CELLS[1:]), sum(counts[c][v][1] for c in CELLS[1:])]
        for v in rates[CELLS[1]]
    }
    noisy = {
        cell: {v: [x + rng.normal(0, SIGMA) for x in pair] for v, pair in per.items()}
        for cell, per in counts.items()
    }
    return Increment(seq, seq * HOUR, (seq + 1) * HOUR, SIGMA, {"cta": noisy})


def site_rate(increments: list[Increment], variant: str) -> float:
    shown, reward = (sum(i.counts["cta"]["*"][variant][k] for i in increments) for k in (0, 1))
    return reward / shown


BEFORE = {
    "device=desktop": {"default": 0.045, "quiz": 0.075, "deal": 0.03},
    "device=mobile": {"default": 0.045, "quiz": 0.03, "deal": 0.075},
}
AFTER = {  # the favourites swap
    "device=desktop": {"default": 0.045, "quiz": 0.03, "deal": 0.075},
    "device=mobile": {"default": 0.045, "quiz": 0.075, "deal": 0.03},
}


@pytest.mark.parametrize("seed", range(8))
def test_a_steady_site_keeps_its_whole_memory(seed):
    rng = np.random.default_rng(seed)
    steady = [increment(i, BEFORE, rng) for i in range(60)]
    assert since_last_change(steady, now=60 * HOUR, half_life_days=3.0) == steady


def test_the_site_rate_moving_with_who_is_shown_what_is_not_a_change():
    """The engines start showing quiz mostly on desktop, where it does best: quiz's site-wide
    rate rises from about 4 % to 7 %, but no cell's rates changed, so nothing is forgotten."""
    rng = np.random.default_rng(0)
    early = {"device=desktop": 40, "device=mobile": 200}
    late = {"device=desktop": 200, "device=mobile": 40}
    history = [increment(i, BEFORE, rng, early) for i in range(30)]
    history += [increment(i, BEFORE, rng, late) for i in range(30, 60)]
    assert site_rate(history[:30], "quiz") < 0.05 < 0.06 < site_rate(history[30:], "quiz")
    assert since_last_change(history, now=60 * HOUR, half_life_days=3.0) == history


@pytest.mark.parametrize("seed", range(4))
def test_after_a_change_only_the_increments_since_it_are_kept(seed):
    rng = np.random.default_rng(seed)
    history = [increment(i, BEFORE, rng) for i in range(40)]
    history += [increment(i, AFTER, rng) for i in range(40, 60)]
    kept = since_last_change(history, now=60 * HOUR, half_life_days=3.0)
    assert kept == history[-len(kept) :]
    assert 16 <= len(kept) <= 24  # the change, to within a few hours of noise


def test_a_change_too_recent_to_tell_from_noise_keeps_the_memory():
    rng = np.random.default_rng(0)
    history = [increment(i, BEFORE, rng) for i in range(40)]
    history.append(increment(40, AFTER, rng))
    assert since_last_change(history, now=41 * HOUR, half_life_days=3.0) == history


def test_increments_awaiting_release_stay_and_short_histories_are_left_alone():
    rng = np.random.default_rng(0)
    pending = Increment(1, HOUR, 2 * HOUR, SIGMA, None)
    one = [increment(0, BEFORE, rng), pending]
    assert since_last_change(one, now=HOUR, half_life_days=3.0) == one
    assert since_last_change([], now=HOUR, half_life_days=3.0) == []
    pending = Increment(20, 20 * HOUR, 21 * HOUR, SIGMA, None)  # purged, before the change
    history = [increment(i, BEFORE, rng) for i in range(20)] + [pending]
    history += [increment(i, BEFORE, rng) for i in range(21, 40)]
    history += [increment(i, AFTER, rng) for i in range(40, 60)]
    kept = since_last_change(history, now=60 * HOUR, half_life_days=3.0)
    assert pending not in kept and kept == history[-len(kept) :]


def from_many_addresses(app):
    """Every request from a network of its own, as many visitors' uploads would be."""
    count = itertools.count()

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            n = next(count)
            scope = {**scope, "client": (f"10.{n >> 8 & 255}.{n & 255}.1", 50000)}
        await app(scope, receive, send)

    return wrapped


def test_the_published_priors_follow_the_site_after_its_preferences_change(tmp_path):
    """Through the app: 16 hours of mobile visitors preferring quiz, then 8 hours preferring
    deal: the next publication says deal, which a 3-day memory alone would not."""
    now = [0.0]
    config = settings(
        tmp_path, rho_per_release=8.0, half_life_days=3.0, rate_per_s=1e9, publish_interval_s=1e9
    )  # published by hand, once an hour
    app = create_app(config, clock=lambda: now[0], rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    with TestClient(from_many_addresses(app)) as client:
        for hour in range(24):
            now[0] = hour * HOUR
            favourite = "quiz" if hour < 16 else "deal"
            for _ in range(30):
                variant = ("quiz", "deal", "default")[int(rng.integers(3))]
                clicks = int(rng.binomial(4, 0.3 if variant == favourite else 0.05))
                answer = post(client, make_upload(variant=variant, shown=4, reward=clicks))
                assert answer.status_code == 200, answer.text
            now[0] += HOUR - 1
            assert admin(client, "POST", "/v1/admin/sites/shop/publish").status_code == 200
        mobile = priors(client).json()["slots"]["cta"]["cells"]["device=mobile"]
    rate = {v: c["reward"] / c["shown"] for v, c in mobile.items()}
    assert max(rate, key=rate.get) == "deal"
    assert SHOP.slots["cta"] == ["default", "quiz", "deal"]


def loud_mobile(increment_: Increment, rng: np.random.Generator, variance: float, stated: bool):
    """``increment_`` with local-mode devices' noise of ``variance`` on every number of the
    mobile cell (and ``*``), stated in its ``local_noise`` or not."""
    counts = increment_.counts["cta"]
    for cell in ("device=mobile", "*"):
        counts[cell] = {v: [x + rng.normal(0, variance**0.5) for x in pair]
                        for v, pair in counts[cell].items()}  # fmt: skip
    local = {"cta": {"device=mobile": variance, "*": variance}} if stated else {}
    return Increment(increment_.seq, increment_.since, increment_.until, SIGMA,
                     {"cta": counts}, local)  # fmt: skip


def test_the_noise_of_local_mode_uploads_is_not_taken_for_a_change():
    """A steady site whose mobile cell holds local-mode uploads: their devices' noise, stated
    with each increment, keeps the memory; the same noise unstated looks like a change."""
    forgot = {True: 0, False: 0}
    for seed, stated in itertools.product(range(6), (True, False)):
        rng = np.random.default_rng(seed)
        steady = [loud_mobile(increment(i, BEFORE, rng), rng, 400.0, stated) for i in range(60)]
        forgot[stated] += since_last_change(steady, now=60 * HOUR, half_life_days=3.0) != steady
    assert forgot[True] == 0
    assert forgot[False] >= 3
