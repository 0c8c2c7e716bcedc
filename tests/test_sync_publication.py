"""Robust aggregation and central DP publication as pure functions: one visitor's upload moves
what is published by at most the documented sensitivity (capping included), the noise has the
documented scale, and published counts are clamped."""

from __future__ import annotations

import gc
import json
import math

import numpy as np
import pytest

from microadjust.server.aggregate import (
    BucketRow,
    SlotSums,
    parse_bucket_rows,
    robust_totals,
    visitor_norm,
)
from microadjust.server.config import SyncSettings
from microadjust.server.models import Counts, SiteDeclaration, SlotUpload
from microadjust.server.publication import (
    Budget,
    Rules,
    epsilon_of,
    noise_sigma,
    period_rho,
    priors_document,
)

MAX_SHOWN = 4
SITE = SiteDeclaration(
    key="key-12345678",
    slots={"cta": ["default", "quiz", "deal"], "headline": ["default", "story"]},
    cells={"device": ["desktop", "mobile"]},
)
CELLS = SITE.cell_ids()[1:]


def visitor(rng: np.random.Generator, slot: str) -> SlotSums:
    """One visitor's largest kind of contribution: every exposure and reward unit in the slot."""
    variants = SITE.slots[slot]
    shown = rng.multinomial(MAX_SHOWN, np.ones(len(variants) + 1) / (len(variants) + 1))
    reward = rng.multinomial(MAX_SHOWN, np.ones(len(variants) + 1) / (len(variants) + 1))
    entry = SlotUpload(
        cell=CELLS[rng.integers(len(CELLS))],
        variants={
            v: Counts(shown=float(s), reward=float(r))
            for v, s, r in zip(variants, shown, reward, strict=False)
        },  # fmt: skip
        holdout=Counts(shown=float(shown[-1]), reward=float(reward[-1])),
    )
    return SlotSums.from_upload(entry)


def published_vector(rows: list[BucketRow], cap: float) -> np.ndarray:
    """Every number a publication would add noise to, before the noise."""
    totals = robust_totals(rows, bucket_cap=cap, max_shown=MAX_SHOWN, half_life_days=30.0,
                           today=10)  # fmt: skip
    values = []
    for slot, variants in SITE.slots.items():
        sums = totals.get(slot, SlotSums()).with_star()
        for cell in SITE.cell_ids():
            for variant in variants:
                values.extend(sums.variants.get(cell, {}).get(variant, (0.0, 0.0)))
    return np.array(values)


@pytest.mark.parametrize("cap", [1.0, 8.0, math.inf])
def test_one_visitor_moves_a_publication_by_at_most_the_sensitivity(cap):
    rng = np.random.default_rng(7)
    bound = visitor_norm(MAX_SHOWN) * math.sqrt(len(SITE.slots))
    worst = 0.0
    for _ in range(200):
        rows = []
        for bucket in range(int(rng.integers(1, 6))):
            for slot in SITE.slots:
                sums = SlotSums()
                for _ in range(int(rng.integers(1, 30))):  # some buckets far above the cap
                    sums.add(visitor(rng, slot))
                rows.append(BucketRow(int(rng.integers(5, 11)), slot, bucket, sums))
        target = int(rng.integers(0, 7))  # an existing bucket, or a new one
        day = int(rng.integers(5, 11))
        neighbour = list(rows)
        for slot in SITE.slots:
            mine = visitor(rng, slot)
            index = next((i for i, r in enumerate(neighbour)
                          if (r.bucket, r.slot, r.day) == (target, slot, day)), None)  # fmt: skip
            if index is None:
                neighbour.append(BucketRow(day, slot, target, mine))
            else:
                merged = SlotSums()
                merged.add(neighbour[index].sums)
                merged.add(mine)
                neighbour[index] = BucketRow(day, slot, target, merged)
        moved = np.linalg.norm(published_vector(neighbour, cap) - published_vector(rows, cap))
        worst = max(worst, moved)
        assert moved <= bound + 1e-9
    assert worst > 0.5 * bound / math.sqrt(2)  # the bound is not vacuous


def test_the_noise_has_the_documented_scale_and_costs_rho():
    rules = Rules(MAX_SHOWN, 86_400, rho_per_publication=0.05, rho_per_day=1.0,
                  half_life_days=30.0)  # fmt: skip
    sigma = noise_sigma(max_shown=MAX_SHOWN, slots=2, rho=0.05)
    sensitivity = visitor_norm(MAX_SHOWN) * math.sqrt(2)
    assert sensitivity**2 / (2 * sigma**2) == pytest.approx(0.05)
    rng = np.random.default_rng(3)
    lots = {"cta": SlotSums({"*": {v: [1e6, 5e5] for v in SITE.slots["cta"]}}, {})}
    draws = [
        priors_document("shop", SITE, lots, rules, version=1, published_at=0.0, rng=rng)["slots"][
            "cta"
        ]["cells"]["*"]["quiz"]["shown"]
        for _ in range(2000)
    ]
    assert np.std(draws) == pytest.approx(sigma, rel=0.06)
    assert np.mean(draws) == pytest.approx(1e6, abs=4 * sigma / math.sqrt(2000))


def test_published_counts_are_clamped_and_empty_cells_left_out():
    rules = Rules(MAX_SHOWN, 86_400, rho_per_publication=0.05, rho_per_day=1.0,
                  half_life_days=30.0)  # fmt: skip
    document = priors_document(
        "shop", SITE, {}, rules, version=3, published_at=0.0, rng=np.random.default_rng(0)
    )
    assert document["version"] == 3 and document["published_at"] == "1970-01-01T00:00:00Z"
    for slot in document["slots"].values():
        assert set(slot["cells"]) <= {"*"} | set(CELLS)
        for variants in slot["cells"].values():
            for counts in variants.values():
                assert 0 <= counts["reward"] <= counts["shown"]
    assert set(document["slots"]["cta"]["cells"]["*"]) == {"default", "quiz", "deal"}


def test_decay_and_capping_combine_per_bucket_day():
    heavy = SlotSums()
    for _ in range(100):
        heavy.add(SlotSums({"device=mobile": {"quiz": [4.0, 0.0]}}, {}))
    light = SlotSums({"device=mobile": {"quiz": [4.0, 0.0]}}, {})
    rows = [BucketRow(0, "cta", 1, heavy), BucketRow(10, "cta", 2, light)]
    totals = robust_totals(rows, bucket_cap=2.0, max_shown=MAX_SHOWN, half_life_days=10.0,
                           today=10)  # fmt: skip
    # heavy: capped to norm 16 (its cell and * copies: 400 sqrt 2) -> 8 sqrt 2, halved by decay
    assert totals["cta"].variants["device=mobile"]["quiz"][0] == pytest.approx(
        4.0 + 0.5 * 16 / math.sqrt(2)
    )


def test_the_default_cadence_spreads_the_daily_budget_over_the_whole_day():
    # a faster cadence spends rho_per_day early and serves one stale prior until midnight (UTC)
    defaults = SyncSettings()
    publications = round(defaults.rho_per_day / defaults.rho_per_publication)
    assert publications * defaults.publish_interval_s >= 86_400
    budget, day, published = Budget(0, 0.0), 0, 0
    for step in range(publications + 5):  # a changed prior at every allowed moment of one day
        now = step * defaults.publish_interval_s
        if now >= 86_400:
            break
        spent = budget.spend(today=day, rho=defaults.rho_per_publication,
                             rho_per_day=defaults.rho_per_day)  # fmt: skip
        assert spent is not None, f"budget spent before {now / 3600:.1f} h"
        budget, published = spent, published + 1
    assert published == publications


@pytest.mark.parametrize("half_life", [3.0, 30.0])
def test_a_periods_lifetime_cost_sums_what_it_moves_every_later_publication(half_life):
    # one visitor's day-0 contribution, published 20 times a day for as long as the server keeps
    # rows (20 half-lives): each publication costs (how far it moves the published vector /
    # sensitivity)^2 * rho_per_publication; the sum is what the priors document states
    rho_pub, per_day = 0.05, 20
    settings = SyncSettings(half_life_days=half_life)
    mine = SlotSums({"device=mobile": {"quiz": [4.0, 4.0]}}, {})
    spent = 0.0
    for today in range(math.ceil(20 * half_life)):
        totals = robust_totals([BucketRow(0, "cta", 1, mine)], bucket_cap=8.0,
                               max_shown=MAX_SHOWN, half_life_days=half_life,
                               today=today)  # fmt: skip
        moved = totals["cta"].norm() / visitor_norm(MAX_SHOWN)  # its cell and *, decayed
        spent += per_day * rho_pub * moved**2
    assert spent == pytest.approx(
        period_rho(rho_per_day=per_day * rho_pub, half_life_days=settings.half_life_days),
        rel=1e-6,
    )
    header = Rules(MAX_SHOWN, 86_400, rho_pub, per_day * rho_pub, half_life).header("shop", SITE)
    assert header["privacy"]["rho_per_period"] == pytest.approx(spent, rel=1e-4)
    assert epsilon_of(spent) > spent  # the (epsilon, 1e-5) conversion only adds


def test_without_decay_a_period_is_never_paid_off():
    assert period_rho(rho_per_day=1.0, half_life_days=math.inf) == math.inf
    rules = Rules(MAX_SHOWN, 86_400, 0.05, 1.0, math.inf)
    assert rules.header("shop", SITE)["privacy"]["rho_per_period"] is None


# -- the publication path is fast and bit-identical to its definition ------------------------


def defined_norm(sums: SlotSums) -> float:
    """The norm as defined: the L2 norm of :meth:`SlotSums.with_star`'s counts, in its order
    (what ``SlotSums.norm`` computed before it stopped building the copy)."""
    full = sums.with_star() if any(c != "*" for c in sums.variants) else sums
    squares = sum(s * s + r * r for v in full.variants.values() for s, r in v.values())
    squares += sum(s * s + r * r for s, r in full.holdout.values())
    return math.sqrt(squares)


def defined_totals(rows: list[BucketRow], cap: float, half_life: float, today: int) -> dict:
    """:func:`robust_totals` with :func:`defined_norm`."""
    totals: dict[str, SlotSums] = {}
    for row in rows:
        norm, limit = defined_norm(row.sums), cap * visitor_norm(MAX_SHOWN)
        scale = (1.0 if norm <= limit else limit / norm) * 0.5 ** ((today - row.day) / half_life)
        totals.setdefault(row.slot, SlotSums()).add(row.sums, scale)
    return totals


def noisy_sums(rng: np.random.Generator, slot: str) -> SlotSums:
    """Any stored shape: noisy local-mode values of any sign and size, a ``*`` cell or not,
    holdouts missing for some cells."""
    sums = SlotSums()
    cells = [*(["*"] if rng.random() < 0.3 else []), *CELLS]
    for cell in rng.permutation(cells)[: int(rng.integers(0, len(cells) + 1))]:
        variants = rng.permutation(SITE.slots[slot])[: int(rng.integers(0, 4))]
        scale = rng.choice([1, 1e-3, 1e3])
        sums.variants[str(cell)] = {
            str(v): (rng.normal(2, 9, 2) * scale).tolist() for v in variants
        }
        if rng.random() < 0.7:
            sums.holdout[str(cell)] = rng.normal(0, 9, 2).tolist()
    return sums


def test_the_norm_is_with_stars_norm_bit_for_bit():
    rng = np.random.default_rng(11)
    for _ in range(3000):
        sums = noisy_sums(rng, "cta")
        assert sums.norm() == defined_norm(sums)  # exactly: a capped row's scale depends on it


def test_published_priors_are_bit_identical_to_the_definition():
    """The same bucket rows and seed publish the same bytes as the defined aggregation."""
    rng = np.random.default_rng(5)
    rows = [
        BucketRow(int(rng.integers(0, 10)), slot, bucket, noisy_sums(rng, slot))
        for bucket in range(300)
        for slot in SITE.slots
    ]
    stored = [(r.day, r.slot, r.bucket, r.sums.to_json()) for r in rows]
    rules = Rules(MAX_SHOWN, 86_400, rho_per_publication=0.4, rho_per_day=8.0, half_life_days=3.0)
    documents = []
    for totals in (
        robust_totals(parse_bucket_rows(stored), bucket_cap=2.0, max_shown=MAX_SHOWN,
                      half_life_days=3.0, today=10),
        defined_totals(rows, cap=2.0, half_life=3.0, today=10),
    ):  # fmt: skip
        assert any(row.sums.norm() > 2.0 * visitor_norm(MAX_SHOWN) for row in rows)  # capped
        document = priors_document(
            "shop", SITE, totals, rules, version=1, published_at=0.0, rng=np.random.default_rng(0)
        )
        documents.append((json.dumps(document), repr(sorted(totals.items()))))
    assert documents[0] == documents[1]


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_bucket_rows_leaves_the_garbage_collector_as_it_was(enabled):
    stored = [(3, "cta", 7, noisy_sums(np.random.default_rng(1), "cta").to_json())]
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        [row] = parse_bucket_rows(stored)
        assert (row.day, row.slot, row.bucket, row.sums) == (
            3,
            "cta",
            7,
            SlotSums.from_json(stored[0][3]),
        )
        assert gc.isenabled() == enabled
        with pytest.raises(ValueError):
            parse_bucket_rows([(3, "cta", 7, "{not json")])
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()
