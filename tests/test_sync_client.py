"""The worker's sync client (protocol v2) on CPython: bounded uploads, exposures now and rewards
later, contextual priors installed per slot on the page, the two privacy modes."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from published import cell

from microadjust import Engine
from microadjust.browser.privacy import local_range
from microadjust.browser.sync_client import SyncClient
from microadjust.core.errors import InvalidParameter, InvalidPrior

SYNC = {"url": "https://sync.example", "site": "shop", "key": "k" * 12, "upload": True}
CELLS = {"device": ["desktop", "mobile"], "returning": ["false", "true"]}
MOBILE = {"device": "mobile", "returning": False, "hour": 3, "referrer": "search"}
MOBILE_CELL = "device=mobile,returning=false"
DESKTOP = {"device": "desktop", "returning": False, "hour": 3}
DESKTOP_CELL = "device=desktop,returning=false"
VARIANTS = ["default", "quiz", "deal"]


def document(**overrides) -> dict:
    """A priors document: on the site ``deal`` wins, on mobile ``quiz``, on desktop ``deal``."""
    doc = {
        "v": 2,
        "site": "shop",
        "version": 5,
        "published_at": "2026-11-26T01:00:00Z",
        "cells": CELLS,
        "upload": {"max_shown": 4, "period_s": 86_400, "default_mode": "aggregate"},
        "privacy": {"mechanism": "central-gaussian-zcdp-increments", "sigma": 0.0},
        "slots": {
            "cta": {
                "variants": VARIANTS,
                "cells": {
                    "*": cell(2000.0, default=80.0, quiz=130.0, deal=160.0),
                    MOBILE_CELL: cell(1000.0, default=40.0, quiz=110.0, deal=20.0),
                    DESKTOP_CELL: cell(1000.0, default=40.0, quiz=20.0, deal=140.0),
                },
            },
            "hero": {"variants": ["default", "warm"], "cells": {"*": {}}},
        },
    }
    doc.update(overrides)
    return doc


def client(mode: str = "aggregate", priors: dict | None = None, **overrides) -> SyncClient:
    sync = SyncClient()
    kwargs = {"gpc": False, "consent": True, **overrides}
    sync.configure({**SYNC, "mode": mode, **kwargs.pop("config", {})}, **kwargs)
    sync.load_priors(document() if priors is None else priors)
    return sync


def upload_all(sync: SyncClient, rng=None) -> list[dict]:
    """Every body the client has to send now, each acknowledged."""
    bodies = []
    while (body := sync.next_upload(rng)) is not None:
        bodies.append(copy.deepcopy(body))
        assert sync.acknowledged(body["batch_id"])
    return bodies


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("site", ""),
        ("upload", "yes"),
        ("mode", "raw"),
        ("epsilon", 30.0),
        ("site_prior_n", -1),
        ("colour", 1),
    ],
)
def test_a_bad_sync_config_names_the_field(field, value):
    with pytest.raises(InvalidParameter, match=field):
        SyncClient().configure({**SYNC, field: value})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"gpc": True}, "Global Privacy Control is on"),
        ({"consent": False}, "the visitor has not consented"),
        ({"config": {"upload": False}}, "the site does not enable uploads"),
    ],
)
def test_nothing_is_counted_or_sent_without_consent_with_gpc_or_when_disabled(overrides, reason):
    sync = client(**overrides)
    assert sync.upload_blocked() == reason
    assert not sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    assert sync.next_upload() is None


# --- uploads -------------------------------------------------------------------------------


def test_a_visitor_with_a_single_seen_decision_uploads_it():
    sync = client()
    assert sync.record_shown(
        "decision-7", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    body = sync.next_upload()
    assert set(body) == {"v", "batch_id", "privacy", "slots"} and body["v"] == 2
    assert re.fullmatch(r"[0-9a-f]{32}", body["batch_id"])
    assert body["privacy"] == {"mode": "aggregate"}
    assert body["slots"] == {
        "cta": {
            "cell": MOBILE_CELL,
            "variants": {"quiz": {"shown": 1, "reward": 0}},
            "holdout": {"shown": 0, "reward": 0},
        }
    }
    text = json.dumps(body)
    assert "decision-7" not in text and "search" not in text and "hour" not in text


def test_exposures_are_counted_now_and_rewards_added_later_never_an_open_zero():
    sync = client()
    sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    sync.record_shown(
        "e2", "cta", "deal", variants=VARIANTS, holdout=False, context=MOBILE, now=1.0
    )
    (first,) = upload_all(sync)
    assert first["slots"]["cta"]["variants"] == cell(1, quiz=0, deal=0)
    assert upload_all(sync) == []  # both still open: nothing more to say, no 0 for them
    assert sync.record_reward("e1", 1.0, now=60.0)  # the click comes later
    (second,) = upload_all(sync)
    assert second["slots"]["cta"]["variants"] == {"quiz": {"shown": 0, "reward": 1}}
    assert sync.record_reward("e2", 0.0, now=1801.0)  # window closed: the 0 is the absence
    assert upload_all(sync) == []
    assert not sync.record_reward("e1", 1.0, now=70.0)  # one reward per decision


def test_the_reward_of_a_decision_whose_exposure_was_not_counted_is_never_uploaded():
    sync = client()
    for i in range(5):  # the fifth exposure is over the bound of 4
        sync.record_shown(
            f"e{i}", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=float(i)
        )
    assert not sync.record_reward("e4", 1.0, now=10.0)
    assert not sync.record_reward("never-seen", 1.0, now=10.0)
    (body,) = upload_all(sync)
    assert body["slots"]["cta"]["variants"] == {"quiz": {"shown": 4, "reward": 0}}


def test_holdout_decisions_are_counted_apart_and_undeclared_ones_not_at_all():
    sync = client()
    sync.record_shown(
        "h", "cta", "default", variants=VARIANTS, holdout=True, context=MOBILE, now=0.0
    )
    assert not sync.record_shown(
        "x", "cta", "banner", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    assert not sync.record_shown(
        "y", "footer", "a", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    sync.record_reward("h", 1.0, now=5.0)
    (body,) = upload_all(sync)
    assert body["slots"]["cta"]["variants"] == {}
    assert body["slots"]["cta"]["holdout"] == {"shown": 1, "reward": 1}


def test_a_reward_goes_to_the_cell_of_its_exposure_in_a_body_of_its_own():
    sync = client()
    sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    upload_all(sync)
    later = {**MOBILE, "returning": True}
    sync.record_shown(
        "e2", "cta", "deal", variants=VARIANTS, holdout=False, context=later, now=100.0
    )
    sync.record_reward("e1", 1.0, now=110.0)
    bodies = upload_all(sync)
    assert sorted(b["slots"]["cta"]["cell"] for b in bodies) == sorted(
        [MOBILE_CELL, "device=mobile,returning=true"]
    )
    first = next(b for b in bodies if b["slots"]["cta"]["cell"] == MOBILE_CELL)
    assert first["slots"]["cta"]["variants"] == {"quiz": {"shown": 0, "reward": 1}}


def test_a_batch_is_resent_unchanged_until_acknowledged_and_a_refused_one_is_dropped():
    sync = client()
    sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    first = sync.next_upload()
    assert sync.next_upload() is first
    assert not sync.acknowledged("someone-else")
    restored = SyncClient()
    restored.configure(SYNC, consent=True, saved=json.loads(json.dumps(sync.to_state())))
    restored.load_priors(document())
    assert restored.next_upload()["batch_id"] == first["batch_id"]
    assert restored.rejected(first["batch_id"]) and restored.next_upload() is None


def test_withdrawing_consent_drops_everything_unsent():
    sync = client()
    sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    sync.set_consent(False)
    sync.set_consent(True)
    assert sync.next_upload() is None
    assert not sync.record_reward("e1", 1.0, now=5.0)


def test_forgetting_drops_the_counts_but_keeps_the_periods_bound():
    sync = client()
    for i in range(4):
        sync.record_shown(
            f"e{i}", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=float(i)
        )
    sync.forget()
    assert sync.next_upload() is None
    assert not sync.record_shown(
        "e9", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=9.0
    )


actions = st.lists(
    st.tuples(
        st.sampled_from(["shown", "reward", "upload", "reload"]),
        st.sampled_from(["cta", "hero"]),
        st.sampled_from(["default", "quiz", "deal", "warm"]),
        st.booleans(),  # holdout
        st.sampled_from([MOBILE, DESKTOP, {**MOBILE, "returning": True}]),
        st.floats(0.0, 1.0),  # reward
        st.integers(0, 40),  # event
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_one_visitors_uploads_in_a_period_move_published_counts_at_most_by_the_bound(steps):
    """Whatever a device does in one period, across uploads and reloads, its bodies hold at
    most ``max_shown`` exposures and reward units per slot: every published count (a cell's
    or ``*``'s) moves by at most that, and the slot's whole vector by sqrt(2) * max_shown."""
    sync, bodies = client(), []
    for t, (kind, slot, variant, holdout, context, reward, event) in enumerate(steps):
        if kind == "shown":
            sync.record_shown(
                f"e{event}",
                slot,
                variant,
                variants=[variant],
                holdout=holdout,
                context=context,
                now=t,
            )
        elif kind == "reward":
            sync.record_reward(f"e{event}", reward, now=float(t))
        elif kind == "upload":
            bodies += upload_all(sync)
        else:
            saved = json.loads(json.dumps(sync.to_state()))
            sync = SyncClient()
            sync.configure(SYNC, consent=True, saved=saved)
            sync.load_priors(document())
    bodies += upload_all(sync)
    for slot in ("cta", "hero"):
        shown, reward = {}, {}
        for body in bodies:
            entry = body["slots"].get(slot)
            if entry is None:
                continue
            counts = {**entry["variants"], "(holdout)": entry["holdout"]}
            for variant, c in counts.items():
                key = (entry["cell"], variant)
                shown[key] = shown.get(key, 0) + c["shown"]
                reward[key] = reward.get(key, 0) + c["reward"]
                assert c["shown"] >= 0 and c["reward"] >= 0
        assert sum(shown.values()) <= 4 and sum(reward.values()) <= 4 + 1e-9
        vector = np.array([*shown.values(), *reward.values()], dtype=float)
        assert np.linalg.norm(vector) <= math.sqrt(2) * 4 + 1e-9


def test_local_mode_noises_every_declared_number_within_the_documented_range():
    sync = client("local", config={"epsilon": 2.0})
    sync.record_shown(
        "e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0.0
    )
    body = sync.next_upload(np.random.default_rng(3))
    assert body["privacy"] == {"mode": "local", "epsilon": 2.0}
    entry = body["slots"]["cta"]
    assert sorted(entry["variants"]) == sorted(VARIANTS)  # zeros too: nothing tells which
    numbers = [x for c in [*entry["variants"].values(), entry["holdout"]] for x in c.values()]
    lo, hi = local_range(2.0, 4)
    assert all(lo <= x <= hi for x in numbers) and len(set(numbers)) == len(numbers)
    assert entry["variants"]["quiz"]["shown"] != 1


# --- priors --------------------------------------------------------------------------------


def test_priors_are_installed_only_for_the_slots_asked_for():
    sync, engine = client(), Engine(seed=1)
    assert sync.install_priors(engine, "cta", MOBILE)
    assert not sync.install_priors(engine, "footer", MOBILE)  # the server knows no footer
    levels = engine.state()["slots"]["cta"]["priors"]
    assert sorted(levels) == ["segment", "site"]
    assert set(engine.state()["slots"]) == {"cta"}  # never "hero", which the page lacks


def test_the_visitors_cell_prior_steers_its_first_decisions():
    """On the site ``deal`` wins; a mobile visitor starts from ``quiz``, a desktop one from
    ``deal``."""
    chosen = {"mobile": [], "desktop": []}
    for seed in range(30):
        for name, context in (("mobile", MOBILE), ("desktop", DESKTOP)):
            sync, engine = client(), Engine(seed=seed)
            sync.install_priors(engine, "cta", context)
            chosen[name].append(engine.rank(context, VARIANTS, slot="cta", now=0.0).action)
    assert chosen["mobile"].count("quiz") >= 27, chosen["mobile"]
    assert chosen["desktop"].count("deal") >= 27, chosen["desktop"]


def test_a_cell_prior_from_an_earlier_page_does_not_linger():
    sync, engine = client(), Engine(seed=1)
    sync.install_priors(engine, "cta", MOBILE)
    sync.install_priors(engine, "cta", {"device": "tablet"})  # its cell has nothing published
    assert list(engine.state()["slots"]["cta"]["priors"]) == ["site"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"v": 1}, "version 1, expected 2"),
        ({"site": "other-shop"}, "for site 'other-shop'"),
        ({"slots": []}, "lacks a 'slots' object"),
        ({"cells": {"device": "mobile"}}, "priors.cells"),
        ({"upload": {"max_shown": 0}}, "max_shown"),
        (
            {"slots": {"cta": {"variants": VARIANTS, "cells": {"*": {"quiz": {"shown": 1}}}}}},
            r"priors.slots.cta.cells.\*.quiz.reward must be a finite number",
        ),
        (
            {"slots": {"cta": {"variants": VARIANTS, "cells": {"*": {"zz": {}}}}}},
            "'zz' is not a declared variant",
        ),
        (
            {
                "slots": {
                    "cta": {
                        "variants": VARIANTS,
                        "cells": {"*": {"quiz": {"shown": 1, "reward": 5}}},
                    }
                }
            },
            "expected 0 <= reward <= shown",
        ),
    ],
)
def test_a_malformed_priors_document_is_refused_clearly_and_changes_nothing(broken, message):
    sync, engine = client(), Engine(seed=1)
    sync.install_priors(engine, "cta", MOBILE)
    before_doc, before_engine = sync.priors, json.dumps(engine.state())
    with pytest.raises(InvalidPrior, match=message):
        sync.load_priors(document(**broken))
    assert sync.priors is before_doc
    sync.install_priors(engine, "cta", MOBILE)  # the kept document installs the same priors
    assert json.dumps(engine.state()) == before_engine


def test_before_the_first_publication_exposures_are_counted_and_local_noise_covers_the_page():
    """Version 0 lists no slot yet: the device still counts (the server knows what is
    declared), and local noise covers every variant the page offered."""
    empty = {**document(), "version": 0, "slots": {}}
    sync = client("local", priors=empty)
    sync.record_shown("e1", "cta", "quiz", variants=VARIANTS, holdout=False, context=MOBILE, now=0)
    body = sync.next_upload(np.random.default_rng(1))
    assert sorted(body["slots"]["cta"]["variants"]) == sorted(VARIANTS)
    published = client(priors=document())  # once published, an undeclared slot is not counted
    assert not published.record_shown(
        "e2", "footer", "a", variants=["a"], holdout=False, context=MOBILE, now=0
    )


def test_priors_of_the_same_version_and_cell_are_installed_once():
    sync, engine = client(), Engine(seed=1)
    sync.install_priors(engine, "cta", MOBILE)
    site = sync.priors.site_stats("cta", engine.schema(), 20.0, 1.0, cap=1.0)
    engine.set_prior("cta", site[0], 0.0)
    sync.install_priors(engine, "cta", MOBILE)  # same version and cell: left alone
    assert "site" not in engine.state()["slots"]["cta"]["priors"]
    sync.load_priors({**document(), "version": 6})
    sync.install_priors(engine, "cta", MOBILE)  # a new version: installed again
    assert "site" in engine.state()["slots"]["cta"]["priors"]
