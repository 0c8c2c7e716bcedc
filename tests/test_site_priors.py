"""The priors document as the browser reads it: cells, noise-aware weights, contextual priors."""

from __future__ import annotations

import pytest

from microadjust import Engine
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
    clean = effective_exposures(Counts(1000.0, 50.0), 0.0, 0.05)
    assert clean == pytest.approx(1000.0)
    noisy = effective_exposures(Counts(1000.0, 50.0), 25.0, 0.05)
    thin = effective_exposures(Counts(100.0, 5.0), 25.0, 0.05)
    assert 0 < thin < noisy < clean
    assert effective_exposures(Counts(0.0, 0.0), 25.0, 0.05) == 0.0


def document(cells: dict) -> PriorsDocument:
    return PriorsDocument.parse(
        {
            "v": 2,
            "site": "shop",
            "version": 1,
            "cells": {"device": ["desktop", "mobile"]},
            "privacy": {"sigma": 0.0},
            "slots": {"cta": {"variants": ["default", "quiz"], "cells": cells}},
        }
    )


def test_the_site_prior_alone_is_contextual():
    """Cells preferring different variants: the site prior (a linear model over the cells)
    steers mobile and desktop apart without any segment prior."""
    doc = document(
        {
            "*": {
                "default": {"shown": 2000, "reward": 100},
                "quiz": {"shown": 2000, "reward": 100},
            },
            "device=mobile": {
                "default": {"shown": 1000, "reward": 20},
                "quiz": {"shown": 1000, "reward": 80},
            },
            "device=desktop": {
                "default": {"shown": 1000, "reward": 80},
                "quiz": {"shown": 1000, "reward": 20},
            },
        }
    )
    chosen = {}
    for device in ("mobile", "desktop"):
        engine = Engine(seed=1)
        stats, weight = doc.site_stats("cta", engine, 1.0, cap=500.0)
        engine.set_prior("cta", stats, weight, level="site")
        chosen[device] = engine.rank({"device": device}, ["default", "quiz"], slot="cta", now=0.0)
    assert chosen["mobile"].action == "quiz" and chosen["desktop"].action == "default"


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
        prior = doc.site_stats("cta", engine, 1.0, cap=1000.0, floor=50.0)
        if prior is not None:
            engine.set_prior("cta", *prior, level="site")
        chosen.add(engine.rank({"device": "mobile"}, ["default", "quiz"], slot="cta").action)
    assert chosen == {"default", "quiz"}
