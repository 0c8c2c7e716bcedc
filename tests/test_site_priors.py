"""The priors document as the browser reads it: cells, noise-aware weights, the random-effects
prior of a cell."""

from __future__ import annotations

import pytest

from microadjust import Engine, InvalidPrior
from microadjust.browser.site_priors import Counts, PriorsDocument, cell_of, effective_exposures

CELLS = {
    "device": ["desktop", "mobile"],
    "referrer": ["search", "direct"],
    "returning": ["false", "true"],
}


@pytest.mark.parametrize(
    ("context", "cell"),
    [
        (
            {"device": "mobile", "referrer": "search", "returning": False},
            "device=mobile,referrer=search,returning=false",
        ),
        (
            {"returning": True, "referrer": "direct", "device": "desktop", "hour": 3},
            "device=desktop,referrer=direct,returning=true",
        ),
        ({"device": "tablet", "referrer": "social"}, "device=other,referrer=other,returning=other"),
        (
            {"device": 1, "referrer": None, "returning": "true"},
            "device=other,referrer=other,returning=true",
        ),
    ],
)
def test_the_cell_follows_the_declared_keys_in_order_with_other_for_the_rest(context, cell):
    assert cell_of(CELLS, context) == cell


def test_no_declared_keys_is_the_single_cell():
    assert cell_of({}, {"device": "mobile"}) == "*"


def test_a_count_is_worth_what_its_noise_leaves_of_it():
    clean = effective_exposures(Counts(1000.0, 50.0), 0.05)
    assert clean == pytest.approx(1000.0)
    noisy = effective_exposures(Counts(1000.0, 50.0, 25.0), 0.05)
    thin = effective_exposures(Counts(100.0, 5.0, 25.0), 0.05)
    assert 0 < thin < noisy < clean
    assert effective_exposures(Counts(0.0, 0.0, 25.0), 0.05) == 0.0


def raw_document(cells: dict, sigma: float = 0.0) -> dict:
    return {
        "v": 2,
        "site": "shop",
        "version": 1,
        "cells": {"device": ["desktop", "mobile"]},
        "privacy": {"sigma": sigma},
        "slots": {"cta": {"variants": ["default", "quiz"], "cells": cells}},
    }


def document(cells: dict, sigma: float = 0.0) -> PriorsDocument:
    return PriorsDocument.parse(raw_document(cells, sigma))


def test_an_entry_with_its_own_noise_is_worth_what_that_noise_leaves_of_it():
    """Local-mode uploads' cells carry their own sigma (the devices' noise too): the same
    counts weigh less under it than under the header's."""
    counts = {"shown": 1000, "reward": 50}
    doc = document(
        {"*": {"quiz": counts}, "device=mobile": {"quiz": {**counts, "sigma": 60.0}}}, sigma=2.0
    )
    assert doc.counts["cta"]["*"]["quiz"].noise_sd == 2.0
    assert doc.counts["cta"]["device=mobile"]["quiz"].noise_sd == 60.0
    schema = Engine(seed=0).schema()
    worth = {
        cell: doc.stats("cta", cell, schema, 1e6, 1.0, cap=1e6)[0]["actions"]["quiz"]["n"]
        for cell in ("*", "device=mobile")
    }
    assert worth["device=mobile"] < worth["*"] / 4


@pytest.mark.parametrize("sigma", [-1.0, "60", float("nan"), True])
def test_a_malformed_noise_is_refused_naming_the_entry(sigma):
    raw = raw_document({"*": {"quiz": {"shown": 10, "reward": 1, "sigma": sigma}}})
    with pytest.raises(InvalidPrior, match=r"priors\.slots\.cta\.cells\.\*\.quiz\.sigma"):
        PriorsDocument.parse(raw)
    with pytest.raises(InvalidPrior, match=r"priors\.privacy\.sigma"):
        PriorsDocument.parse({**raw_document({}), "privacy": {"sigma": sigma}})


def two_devices(mobile: tuple[int, int], desktop: tuple[int, int], shown: int) -> PriorsDocument:
    """Default and quiz on mobile and desktop: ``shown`` exposures each, the given rewards."""
    cells = {
        "device=mobile": {
            "default": {"shown": shown, "reward": mobile[0]},
            "quiz": {"shown": shown, "reward": mobile[1]},
        },
        "device=desktop": {
            "default": {"shown": shown, "reward": desktop[0]},
            "quiz": {"shown": shown, "reward": desktop[1]},
        },
    }
    cells["*"] = {
        v: {"shown": 2 * shown, "reward": mobile[i] + desktop[i]}
        for i, v in enumerate(("default", "quiz"))
    }
    return document(cells)


def install(doc: PriorsDocument, engine: Engine, cell: str, cap: float = 1000.0) -> None:
    """What SyncClient.install_priors does: the site prior, then the cell's own."""
    schema, strength = engine.schema(), float(engine.params["prior_strength"])
    engine.set_prior("cta", *doc.site_stats("cta", schema, strength, 1.0, cap=cap), level="site")
    segment = doc.stats("cta", cell, schema, strength, 1.0, cap=cap)
    if segment is not None:
        engine.set_prior("cta", *segment, level="segment")


def test_cells_that_differ_only_by_chance_have_no_spread():
    same = two_devices(mobile=(50, 55), desktop=(52, 51), shown=1000)
    assert same.spread("cta") == 0.0
    apart = two_devices(mobile=(20, 80), desktop=(80, 20), shown=1000)
    # rates of 2 % and 8 %, 3 points either side of each variant's 5 %: the variance of two
    # cells about their mean (ddof 1) is 2 * 0.03 ** 2, less what the counts' noise explains
    assert apart.spread("cta") == pytest.approx(2 * 0.03**2, rel=0.1)


def test_cells_that_differ_steer_their_visitors_apart():
    doc = two_devices(mobile=(20, 80), desktop=(80, 20), shown=1000)
    for device, best in (("mobile", "quiz"), ("desktop", "default")):
        engine = Engine(seed=1)
        install(doc, engine, f"device={device}")
        chosen = engine.rank({"device": device}, ["default", "quiz"], slot="cta", now=0.0)
        assert chosen.action == best


def test_a_thin_cell_that_looks_different_by_chance_follows_the_site():
    """No real difference between cells: a cell whose few exposures favour quiz by chance
    (3 of 40 against 2 of 40) still starts from the site's best, default, and confidently."""
    doc = document(
        {
            "*": {
                "default": {"shown": 20000, "reward": 1600},
                "quiz": {"shown": 20000, "reward": 1000},
            },
            "device=mobile": {
                "default": {"shown": 19960, "reward": 1598},
                "quiz": {"shown": 19960, "reward": 997},
            },
            "device=desktop": {
                "default": {"shown": 40, "reward": 2},
                "quiz": {"shown": 40, "reward": 3},
            },
        }
    )
    assert doc.spread("cta") == 0.0
    picks = set()
    for seed in range(20):
        engine = Engine(seed=seed)
        install(doc, engine, "device=desktop")
        picks.add(engine.rank({"device": "desktop"}, ["default", "quiz"], slot="cta").action)
    assert picks == {"default"}


def test_a_thin_variant_keeps_what_it_has_when_the_others_are_capped():
    """Capping is per variant: a thin variant is not made thinner because another one has
    more than the cap (so the fleet does not explore it again and again)."""
    doc = document(
        {
            "*": {
                "default": {"shown": 50000, "reward": 2500},
                "quiz": {"shown": 400, "reward": 8},
            }
        }
    )
    engine = Engine(seed=1)
    install(doc, engine, "*", cap=1000.0)
    site = engine.state()["slots"]["cta"]["priors"]["site"]["actions"]
    assert site["default"][0][0][0] == pytest.approx(1000.0)
    assert site["quiz"][0][0][0] == pytest.approx(400.0)


def test_a_prior_counts_as_its_cap_whatever_the_engines_prior_strength():
    doc = document({"*": {"default": {"shown": 5000, "reward": 250}}})
    for strength in (5.0, 20.0, 1000.0):
        engine = Engine(seed=1, prior_strength=strength)
        stats, weight = doc.stats("cta", "*", engine.schema(), strength, 1.0, cap=300.0)
        engine.set_prior("cta", stats, weight, level="segment")
        bias = engine.state()["slots"]["cta"]["priors"]["segment"]["actions"]["default"][0][0][0]
        assert bias == pytest.approx(300.0)  # the bias precision: 300 observations


def test_a_site_with_no_click_yet_leaves_every_variant_open():
    """Exposures but no reward: the site floor must not pin every variant to a known 0, or
    every fresh visitor would pick the first variant and the fleet would never explore."""
    doc = document({"*": {"default": {"shown": 5, "reward": 0}}})
    chosen = set()
    for seed in range(30):
        engine = Engine(seed=seed)
        prior = doc.site_stats("cta", engine.schema(), 20.0, 1.0, cap=1000.0, floor=50.0)
        if prior is not None:
            engine.set_prior("cta", *prior, level="site")
        chosen.add(engine.rank({"device": "mobile"}, ["default", "quiz"], slot="cta").action)
    assert chosen == {"default", "quiz"}


def test_rates_worth_less_than_one_exposure_tilt_no_visitor():
    """Counts buried in noise (local mode, few uploads) give every variant the same prior,
    however their noisy rates differ, so visitors spread as with no prior; a variant with real
    evidence keeps its own rate."""
    loud = {"sigma": 120.0}
    doc = document(
        {
            "*": {
                "default": {"shown": 200, "reward": 0, **loud},
                "quiz": {"shown": 200, "reward": 200, **loud},
            }
        }
    )
    schema = Engine(seed=0).schema()
    prior, _ = doc.site_stats("cta", schema, 1e6, 1.0, cap=1e6, floor=50.0)
    means = {v: a["reward_sum"] / a["n"] for v, a in prior["actions"].items()}
    assert means["default"] == means["quiz"]
    engine = Engine(seed=0)
    engine.set_prior("cta", prior, 1.0, level="site")
    chosen = engine.rank({"device": "mobile"}, ["default", "quiz"], slot="cta", now=0.0)
    assert chosen.probability == pytest.approx(0.5)
    clear = document(
        {
            "*": {
                "default": {"shown": 20000, "reward": 600},
                "quiz": {"shown": 200, "reward": 200, **loud},
            }
        }
    )
    prior, _ = clear.site_stats("cta", schema, 1e6, 1.0, cap=1e6, floor=50.0)
    means = {v: a["reward_sum"] / a["n"] for v, a in prior["actions"].items()}
    assert means["default"] == pytest.approx(0.03, abs=0.001)
