"""Robust aggregation and central DP publication by increments as pure functions: one visitor's
period moves everything ever released by at most the documented sensitivity (capping and any
split over increments included), the noise has the documented scale, the published sum states
its own noise, and published counts are clamped."""

from __future__ import annotations

import gc
import json
import math

import numpy as np
import pytest

from microadjust.browser.privacy import DEFAULT_MAX_SHOWN, local_noise, local_sigma
from microadjust.server.aggregate import (
    BucketRow,
    SlotSums,
    parse_bucket_rows,
    robust_totals,
    upload_sums,
    visitor_norm,
)
from microadjust.server.config import SyncSettings
from microadjust.server.models import Counts, SiteDeclaration, SlotUpload
from microadjust.server.publication import Rules, priors_document
from microadjust.server.release import (
    DAY_S,
    Increment,
    decayed_sum,
    epsilon_of,
    increment_totals,
    noisy_increment,
    release_sigma,
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


def declared_numbers(totals: dict[str, SlotSums]) -> list[float]:
    """Every declared (slot, cell, variant) count of ``totals``, in a fixed order."""
    values = []
    for slot, variants in SITE.slots.items():
        sums = totals.get(slot, SlotSums()).with_star()
        for cell in SITE.cell_ids():
            for variant in variants:
                values.extend(sums.variants.get(cell, {}).get(variant, (0.0, 0.0)))
    return values


def published_vector(rows: list[BucketRow], cap: float) -> np.ndarray:
    """Every number a publication would add noise to, before the noise."""
    totals = robust_totals(rows, bucket_cap=cap, max_shown=MAX_SHOWN)
    return np.array(declared_numbers(totals))


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


def visitor_upload(rng: np.random.Generator, slot: str, shown: int, reward: int) -> SlotUpload:
    """A visitor's upload of ``shown`` exposures and ``reward`` units in one cell."""
    variants = SITE.slots[slot]
    k = len(variants) + 1
    s, r = rng.multinomial(shown, np.ones(k) / k), rng.multinomial(reward, np.ones(k) / k)
    return SlotUpload(
        cell=CELLS[rng.integers(len(CELLS))],
        variants={
            v: Counts(shown=float(a), reward=float(b))
            for v, a, b in zip(variants, s, r, strict=False)
        },  # fmt: skip
        holdout=Counts(shown=float(s[-1]), reward=float(r[-1])),
    )


def released_vector(increments: list[list[tuple[int, dict]]], cap: float) -> np.ndarray:
    """Every number of every increment, before noise, concatenated."""
    values = []
    for uploads in increments:
        totals = increment_totals(uploads, bucket_cap=cap, max_shown=MAX_SHOWN)
        values.extend(declared_numbers(totals))
    return np.array(values)


@pytest.mark.parametrize("cap", [1.0, 8.0, math.inf])
def test_one_visitor_period_spread_over_increments_moves_all_releases_by_at_most_the_bound(cap):
    """The per-visitor bound of continual release: a period's uploads, split over increments
    and source buckets in any way, move the concatenation of all increments by <= sensitivity."""
    rng = np.random.default_rng(17)
    bound = visitor_norm(MAX_SHOWN) * math.sqrt(len(SITE.slots))
    worst = 0.0
    for _ in range(150):
        increments = [
            [
                (
                    int(rng.integers(0, 4)),
                    {slot: visitor_upload(rng, slot, MAX_SHOWN, MAX_SHOWN) for slot in SITE.slots},
                )
                for _ in range(int(rng.integers(1, 25)))  # some buckets far above the cap
            ]
            for _ in range(int(rng.integers(1, 5)))
        ]
        neighbour = [list(uploads) for uploads in increments]
        for slot in SITE.slots:  # one visitor's period: at most max_shown of each, split up
            shown = rng.multinomial(MAX_SHOWN, np.ones(3) / 3)
            reward = rng.multinomial(MAX_SHOWN, np.ones(3) / 3)
            for part in range(3):
                where = neighbour[int(rng.integers(len(neighbour)))]
                entry = visitor_upload(rng, slot, shown[part], reward[part])
                where.append((int(rng.integers(0, 5)), {slot: entry}))
        moved = np.linalg.norm(released_vector(neighbour, cap) - released_vector(increments, cap))
        worst = max(worst, moved)
        assert moved <= bound + 1e-9
    assert worst > 0.25 * bound  # the bound is not vacuous


def test_one_increment_has_the_documented_noise_and_costs_rho():
    sigma = release_sigma(max_shown=MAX_SHOWN, slots=2, rho=2.0)
    sensitivity = visitor_norm(MAX_SHOWN) * math.sqrt(2)
    assert sensitivity**2 / (2 * sigma**2) == pytest.approx(2.0)
    rng = np.random.default_rng(3)
    lots = {"cta": SlotSums({"*": {v: [1e6, 5e5] for v in SITE.slots["cta"]}}, {})}
    draws = [
        noisy_increment(lots, SITE, sigma=sigma, rng=rng).counts["cta"]["*"]["quiz"][0]
        for _ in range(2000)
    ]
    assert np.std(draws) == pytest.approx(sigma, rel=0.06)
    assert np.mean(draws) == pytest.approx(1e6, abs=4 * sigma / math.sqrt(2000))
    empty = noisy_increment({}, SITE, sigma=sigma, rng=rng).counts  # every number, data or not
    assert set(empty) == set(SITE.slots) and set(empty["cta"]) == set(SITE.cell_ids())


def test_a_published_sum_states_its_own_noise():
    """sigma of a decayed sum = sigma_release * sqrt(sum of squared weights), measured."""
    rng = np.random.default_rng(4)
    sigma, half_life, now = 3.0, 2.0, 10 * DAY_S
    ends = [now - k * DAY_S / 4 for k in range(12)]
    sums = []
    for _ in range(3000):
        increments = [
            Increment(k, end - DAY_S / 4, end, sigma,
                      {"cta": {"*": {"quiz": [100.0 + rng.normal(0, sigma), 0.0]}}})
            for k, end in enumerate(ends)
        ]  # fmt: skip
        released = decayed_sum(increments, now=now, half_life_days=half_life)
        sums.append(released.counts["cta"]["*"]["quiz"][0])
    weights = np.array([0.5 ** ((now - end) / (half_life * DAY_S)) for end in ends])
    assert released.sigma == pytest.approx(sigma * math.sqrt(np.sum(weights**2)))
    assert np.std(sums) == pytest.approx(released.sigma, rel=0.06)
    assert np.mean(sums) == pytest.approx(100.0 * weights.sum(), abs=4 * released.sigma / 50)
    assert released.increments == 12


def local_upload(rng: np.random.Generator, epsilon: float) -> SlotUpload:
    """A local-mode visitor of the mobile cell who saw nothing: all its numbers are noise."""
    variants = SITE.slots["cta"]
    noisy = local_noise([0.0] * (2 * len(variants) + 2), epsilon, MAX_SHOWN, rng)
    pairs = [Counts(shown=noisy[2 * k], reward=noisy[2 * k + 1]) for k in range(len(variants) + 1)]
    return SlotUpload(
        cell="device=mobile", variants=dict(zip(variants, pairs, strict=False)), holdout=pairs[-1]
    )


@pytest.mark.parametrize("uploads", [4, 40])
def test_a_published_sum_of_local_mode_uploads_states_the_devices_noise_too(uploads):
    """Local-mode counts carry each device's noise (scaled with its upload): the published
    sigma of their cell and of ``*`` is all the noise in them, and grows with the uploads;
    a cell without local-mode uploads keeps the central sigma. Measured on uploads whose
    true counts are 0, so that what is published is the noise alone."""
    rng = np.random.default_rng(uploads)
    central, epsilon = 1.0, 1.0
    rules = Rules(MAX_SHOWN, 86_400, rho_per_release=2.0, half_life_days=30.0)
    z: dict[str, list[float]] = {"device=mobile": [], "*": []}
    sigmas = []
    for _ in range(300):
        sums = SlotSums()
        for _ in range(uploads):
            sums.add(
                upload_sums(local_upload(rng, epsilon), MAX_SHOWN, local_sigma(1.0, MAX_SHOWN))
            )
        noised = noisy_increment({"cta": sums}, SITE, sigma=central, rng=rng)
        increment = Increment(1, 0.0, 0.0, noised.sigma, noised.counts, noised.local_noise)
        released = decayed_sum([increment], now=0.0, half_life_days=30.0)
        for cell, draws in z.items():
            sigma = released.sigma_of("cta", cell)
            draws += [
                pair[k] / sigma for pair in released.counts["cta"][cell].values() for k in (0, 1)
            ]
        sigmas.append(released.sigma_of("cta", "device=mobile"))
        assert released.sigma_of("cta", "device=desktop") == central
        assert released.sigma_of("headline", "device=mobile") == central
    for draws in z.values():
        assert np.std(draws) == pytest.approx(1.0, rel=0.05)
    # each loud upload is scaled to one visitor's norm, shared by its 8 numbers counted twice
    per_upload = visitor_norm(MAX_SHOWN) / math.sqrt(2 * 2 * (len(SITE.slots["cta"]) + 1))
    assert sigmas == pytest.approx([math.sqrt(central**2 + uploads * per_upload**2)] * 300)
    document = priors_document("shop", SITE, released, rules, version=1, published_at=0.0)
    star = document["slots"]["cta"]["cells"]["*"]
    assert all(entry["sigma"] == round(released.sigma_of("cta", "*"), 4) for entry in star.values())
    assert document["privacy"]["sigma"] == central
    assert all(
        "sigma" not in entry for entry in document["slots"]["headline"]["cells"]["*"].values()
    )


def test_pending_increments_are_left_out_of_the_sum():
    done = Increment(1, 0.0, 1.0, 2.0, {"cta": {"*": {"quiz": [5.0, 1.0]}}})
    pending = Increment(2, 1.0, 2.0, 2.0, None)
    released = decayed_sum([done, pending], now=1.0, half_life_days=math.inf)
    assert released.counts == {"cta": {"*": {"quiz": [5.0, 1.0]}}} and released.sigma == 2.0


def test_published_counts_are_clamped_and_empty_cells_left_out():
    rules = Rules(MAX_SHOWN, 86_400, rho_per_release=2.0, half_life_days=30.0)
    noise = noisy_increment({}, SITE, sigma=5.0, rng=np.random.default_rng(0)).counts
    increment = Increment(1, 0.0, 0.0, 5.0, noise)
    released = decayed_sum([increment], now=0.0, half_life_days=30.0)
    document = priors_document("shop", SITE, released, rules, version=3, published_at=0.0)
    assert document["version"] == 3 and document["published_at"] == "1970-01-01T00:00:00Z"
    assert document["privacy"]["sigma"] == 5.0
    for slot in document["slots"].values():
        assert set(slot["cells"]) <= {"*"} | set(CELLS)
        for variants in slot["cells"].values():
            for counts in variants.values():
                assert 0 <= counts["reward"] <= counts["shown"]
    assert set(document["slots"]["cta"]["cells"]["*"]) == {"default", "quiz", "deal"}
    grown = SiteDeclaration(key=SITE.key, slots={**SITE.slots, "hero": ["a"]}, cells=SITE.cells)
    later = priors_document("shop", grown, released, rules, version=4, published_at=0.0)
    assert later["slots"]["hero"]["cells"] == {"*": {"a": {"shown": 0.0, "reward": 0.0}}}


def test_capping_is_per_bucket():
    heavy = SlotSums()
    for _ in range(100):
        heavy.add(SlotSums({"device=mobile": {"quiz": [4.0, 0.0]}}, {}))
    light = SlotSums({"device=mobile": {"quiz": [4.0, 0.0]}}, {})
    rows = [BucketRow(0, "cta", 1, heavy), BucketRow(10, "cta", 2, light)]
    totals = robust_totals(rows, bucket_cap=2.0, max_shown=MAX_SHOWN)
    # heavy: capped to norm 16 (its cell and * copies: 400 sqrt 2) -> 8 sqrt 2; light: as is
    assert totals["cta"].variants["device=mobile"]["quiz"][0] == pytest.approx(
        4.0 + 16 / math.sqrt(2)
    )


@pytest.mark.parametrize("half_life", [1.0, 3.0, 30.0, math.inf])
def test_the_documents_privacy_is_one_release_per_visitor_period_whatever_the_memory(half_life):
    rules = Rules(MAX_SHOWN, 86_400, rho_per_release=2.0, half_life_days=half_life)
    privacy = rules.header("shop", SITE, 1.5)["privacy"]
    assert privacy["rho_per_period"] == 2.0
    assert privacy["epsilon_per_period"] == pytest.approx(epsilon_of(2.0), abs=1e-4)
    assert privacy["sigma"] == 1.5  # the published numbers' noise, as given
    sigma_release = release_sigma(max_shown=MAX_SHOWN, slots=2, rho=2.0)
    assert privacy["sigma_release"] == pytest.approx(sigma_release, abs=1e-4)


def test_the_default_bound_is_two_per_visitor():
    """Chosen with bench/fleet.py: half the noise of 4 at the same privacy (README)."""
    assert SyncSettings().max_shown == DEFAULT_MAX_SHOWN == 2
    assert release_sigma(max_shown=2, slots=1, rho=8.0) == 1.0


def test_the_default_costs_less_than_the_re_noised_cumulative_counts_did():
    """Before continual release a visitor-period cost rho 21.6 (epsilon 53 at delta 1e-5)."""
    default = SyncSettings().rho_per_release
    assert epsilon_of(default) < 53.0


# -- the publication path is fast and bit-identical to its definition ------------------------


def defined_norm(sums: SlotSums) -> float:
    """The norm as defined: the L2 norm of :meth:`SlotSums.with_star`'s counts, in its order
    (what ``SlotSums.norm`` computed before it stopped building the copy)."""
    full = sums.with_star() if any(c != "*" for c in sums.variants) else sums
    squares = sum(s * s + r * r for v in full.variants.values() for s, r in v.values())
    squares += sum(s * s + r * r for s, r in full.holdout.values())
    return math.sqrt(squares)


def defined_totals(rows: list[BucketRow], cap: float) -> dict:
    """:func:`robust_totals` with :func:`defined_norm`."""
    totals: dict[str, SlotSums] = {}
    for row in rows:
        norm, limit = defined_norm(row.sums), cap * visitor_norm(MAX_SHOWN)
        scale = 1.0 if norm <= limit else limit / norm
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
    documents = []
    for totals in (
        robust_totals(parse_bucket_rows(stored), bucket_cap=2.0, max_shown=MAX_SHOWN),
        defined_totals(rows, cap=2.0),
    ):  # fmt: skip
        assert any(row.sums.norm() > 2.0 * visitor_norm(MAX_SHOWN) for row in rows)  # capped
        document = noisy_increment(totals, SITE, sigma=8.9, rng=np.random.default_rng(0)).counts
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
