"""Why a decision (the debug panel's explanation): it matches the model, and costs nothing off."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microadjust import Engine
from microadjust.browser.session import WorkerSession
from microadjust.core.features import Featurizer
from microadjust.core.why import top_terms

ACTIONS = ["default", "quiz"]


def trained(policy: str = "linucb", explain: bool = False, n: int = 300) -> Engine:
    """An engine that learned 'quiz' pays on mobile only and 'default' pays a steady 0.5."""
    engine = Engine(policy=policy, seed=3, explore_floor=0.5)
    rng = np.random.default_rng(0)
    for t in range(n):
        device = "mobile" if rng.random() < 0.5 else "desktop"
        context = {"device": device, "hour": int(rng.integers(0, 24)), "referrer": "search"}
        d = engine.rank(context, ACTIONS, slot="cta", now=float(t), explain=explain)
        paid = d.action == "quiz" and device == "mobile" or d.action == "default" and 0.5
        engine.reward(d.event_id, float(paid), now=float(t))
    return engine


def test_the_top_term_of_a_trained_linucb_is_the_feature_that_drives_the_choice():
    engine = trained()
    mobile = {"device": "mobile", "hour": 9, "referrer": "search"}
    assert engine.policy_probabilities(mobile, ACTIONS, slot="cta")["quiz"] == 0.75  # the best
    d = next(  # explore_floor=0.5 explores a quarter of the time: the first exploit
        d
        for d in (engine.rank(mobile, ACTIONS, slot="cta", explain=True) for _ in range(50))
        if d.reason.startswith("exploit")
    )
    assert d.action == "quiz"
    assert d.why.terms[0].feature == "device=mobile"
    assert d.why.terms[0].contribution > 0
    assert len(d.why.terms) == 3
    magnitudes = [abs(t.contribution) for t in d.why.terms]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert d.why.runner_up.action == "default"
    assert d.why.runner_up.score == pytest.approx(0.5, abs=0.1)
    assert d.why.score > d.why.runner_up.score
    assert d.reason == f"exploit: score {d.why.score:.3g} ± {d.reason.split('± ')[1]}"


def test_every_term_together_is_the_score():
    engine = trained()
    context = {"device": "desktop", "hour": 20, "referrer": "search"}
    d = engine.rank(context, ACTIONS, slot="cta", explain=True)
    slot = engine._slots["cta"]
    k = slot.models.index[d.action]
    features = engine._features
    x = features.transform(features.parse(context, "context"), None, 1)[0]
    every = top_terms(x, slot.models.theta[k], features.sources(context), count=features.dim)
    assert sum(t.contribution for t in every) == pytest.approx(d.why.score)
    assert every[: len(d.why.terms)] == d.why.terms


def test_action_features_and_interactions_are_named_by_their_source():
    f = Featurizer(dim=1 << 16)  # wide: no collisions
    sources = f.sources({"device": "mobile", "dwell_s": 2.0, "touch": True}, {"color": "red"})
    names = sorted(name for group in sources.values() for name in group)
    assert names == sorted(
        [
            "(bias)",
            "device=mobile",
            "dwell_s",
            "touch=true",
            "a:color=red",
            "device=mobile × a:color=red",
            "dwell_s × a:color=red",
            "touch=true × a:color=red",
        ]
    )
    context, action = {"device": "mobile", "dwell_s": 2.0, "touch": True}, {"color": "red"}
    row = f.transform(f.parse(context, "context"), [f.parse(action, "action", "a:")], 1)[0]
    assert set(np.flatnonzero(row).tolist()) == set(sources)


def test_a_collision_names_both_sources():
    f = Featurizer(dim=2)  # a single hashed index besides the bias: everything collides
    assert f.sources({"device": "mobile", "hour": 3}) == {
        0: ["(bias)"],
        1: ["device=mobile", "hour"],
    }


def test_thompson_scores_no_features_but_names_the_runner_up():
    d = trained("thompson").rank({"device": "mobile"}, ACTIONS, slot="cta", explain=True)
    assert d.why.terms == []
    assert d.why.runner_up.action in ACTIONS and d.why.runner_up.action != d.action


def test_explaining_changes_nothing_and_is_off_by_default():
    quiet, explaining = trained(), trained(explain=True)
    assert quiet.state() == explaining.state()
    assert quiet.rank({"device": "mobile"}, ACTIONS, slot="cta").why is None


def test_the_worker_explains_only_when_the_page_asks():
    def decision(explain: bool) -> dict:
        session = WorkerSession()
        init = {"v": 1, "type": "init", "config": {"seed": 1}, "context": {"device": "mobile"}}
        session.handle({**init, **({"explain": True} if explain else {})})
        replies = session.handle(
            {"v": 1, "type": "decide", "slots": [{"slot": "cards", "items": ["a", "b", "c"]}]}
        )
        return replies[0]["decisions"][0]

    quiet, explained = decision(False), decision(True)
    assert "why" not in quiet and quiet["holdout"] is False
    why = explained["why"]
    assert set(why) == {"score", "terms", "runner_up"}
    assert why["runner_up"]["action"] in {"a", "b", "c"} - {explained["variant"]}
    json.dumps(why)  # it crosses to the page as JSON
