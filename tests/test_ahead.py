"""Decisions made ahead, on CPython: the engine's side (rank_ahead, adopt) and the worker's."""

from __future__ import annotations

import json
import time

import pytest

from microadjust import Engine
from microadjust.browser.ahead import KEPT
from microadjust.browser.session import WorkerSession
from microadjust.core.errors import UnknownEvent

INIT = {"v": 1, "type": "init", "context": {"device": "mobile"}}
CTA = {"slot": "cta", "variants": ["default", "discount", "quiz"]}
CARDS = {"slot": "cards", "items": ["huila", "yirga", "night"]}


class Clock:
    """time.time() as the session and the engine see it."""

    def __init__(self, monkeypatch) -> None:
        self.now = 1_800_000_000.0
        monkeypatch.setattr("time.time", lambda: self.now)


def boot(state=None, ahead=None, **config) -> tuple[WorkerSession, list[dict]]:
    session = WorkerSession()
    message = {**INIT, "config": {"seed": 7, **config}, "state": state}
    if ahead is not None:
        message["ahead"] = ahead
    replies = session.handle(message)
    # a person's first input: a goal before any would read as automated and teach nothing
    session.handle({"v": 1, "type": "events", "events": [{"kind": "input", "t": 1}]})
    return session, replies


def decide(session: WorkerSession, *slots: dict, **fields) -> list[dict]:
    return as_host(session, {"v": 1, "type": "decide", "slots": list(slots), **fields})


def as_host(session: WorkerSession, message: dict) -> list[dict]:
    """``message``'s replies, then, as web/worker.js does when they end with ``ahead_due``, the
    replies of the ``decide_ahead`` it sends in a task of its own."""
    replies = session.handle(message)
    if of(replies, "ahead_due"):
        replies += session.handle({"v": 1, "type": "decide_ahead"}, from_host=True)
    return replies


def of(replies: list[dict], kind: str) -> list[dict]:
    return [r for r in replies if r["type"] == kind]


def made_ahead(replies: list[dict]) -> dict[str, dict]:
    [ahead] = of(replies, "ahead")
    return {entry["slot"]: entry for entry in ahead["decisions"]}


def shown(entry: dict, spec: dict, **extra) -> dict:
    """The loader's ``init`` entry for a decision made ahead it applied."""
    order = {"order": entry["order"]} if "order" in entry else {}
    return {**spec, "event_id": entry["event_id"], "variant": entry["variant"], **order, **extra}


def returning(*specs: dict, **config) -> tuple[WorkerSession, dict[str, dict], list[dict]]:
    """A first page view that decides ``specs`` and hands the page the next view's decisions;
    then the next page view, which shows all of them from first paint."""
    first, _ = boot(**config)
    replies = decide(first, *specs)
    [save] = of(replies, "save")
    ahead = made_ahead(replies)
    session, init = boot(save["state"], [shown(ahead[s["slot"]], s) for s in specs], **config)
    return session, ahead, init


# --- the engine ---------------------------------------------------------------------------


def test_a_decision_made_ahead_waits_for_nothing_until_adopted_then_learns_its_propensity():
    engine = Engine(seed=3, holdout=0.2)
    ahead = engine.rank_ahead({"visits": 2}, ["default", "b", "c"], slot="cta", now=0.0)
    assert engine.state()["pending"] == []  # unused, it would teach nothing
    restored = Engine.from_state(engine.state())
    [decision] = restored.adopt([ahead], now=3600.0)  # shown an hour later: its window starts
    assert decision == ahead.decision
    restored.reward(decision.event_id, 1.0, now=3700.0)
    [logged] = restored.log()
    assert logged["propensity"] == ahead.decision.probability and logged["holdout"] is (
        ahead.decision.holdout
    )
    assert logged["context"] == {"visits": 2} and logged["t"] == 3600.0


def test_adopting_twice_or_another_engines_decision_is_refused_and_changes_nothing():
    engine = Engine(seed=3)
    ahead = engine.rank_ahead({}, ["default", "b"], slot="cta", now=0.0)
    engine.adopt([ahead], now=1.0)
    before = json.dumps(engine.state())
    with pytest.raises(UnknownEvent, match="not made ahead by this engine, or is adopted"):
        engine.adopt([ahead], now=2.0)
    other = Engine(seed=4).rank_ahead({}, ["default", "b"], slot="cta", now=0.0)
    with pytest.raises(UnknownEvent):
        engine.adopt([other], now=2.0)
    assert json.dumps(engine.state()) == before


# --- the worker: deciding ahead -------------------------------------------------------------


def test_the_decisions_go_out_first_and_the_next_views_are_made_in_a_task_of_their_own():
    session, _ = boot()
    replies = session.handle({"v": 1, "type": "decide", "slots": [CTA, CARDS]})
    assert [r["type"] for r in replies] == ["decisions", "ahead_due", "unsaved"]
    assert session.ahead.issued == {}  # nothing made ahead yet: the page gets its decisions first
    later = session.handle({"v": 1, "type": "decide_ahead"}, from_host=True)
    assert [r["type"] for r in later] == ["save", "ahead"]
    with pytest.raises(Exception, match="host"):  # the page may not ask for it
        session.handle({"v": 1, "type": "decide_ahead"})


def test_after_the_decisions_the_next_views_are_saved_then_handed_to_the_page():
    session, _ = boot()
    replies = decide(session, CTA, CARDS)
    types = [r["type"] for r in replies]
    assert types.index("save") < types.index("ahead")  # stored before the page may keep them
    ahead = made_ahead(replies)
    assert (
        ahead["cta"]["variants"] == CTA["variants"] and ahead["cta"]["variant"] in CTA["variants"]
    )
    assert ahead["cards"]["items"] == CARDS["items"] and sorted(ahead["cards"]["order"]) == sorted(
        CARDS["items"]
    )
    for entry in ahead.values():
        assert 0 < entry["probability"] <= 1 and entry["event_id"] and entry["reason"]
        assert entry["expires"] == pytest.approx((time.time() + 24 * 3600) * 1000, abs=60_000)
    [save] = of(replies, "save")
    issued = save["state"]["ahead"]["issued"]
    assert issued["cta"][0]["decisions"][0]["event_id"] == ahead["cta"]["event_id"]
    context = issued["cta"][0]["decisions"][0]["context"]
    assert context["visits"] == 2 and context["referrer"] == "internal" and context["returning"]
    assert session.engine.state()["pending"][-1][0] not in {e["event_id"] for e in ahead.values()}


def test_triggers_manual_slots_and_visitors_who_keep_nothing_get_nothing_decided_ahead():
    session, _ = boot()
    nudge = {"slot": "nudge", "variants": ["default", "b"], "trigger": "dwell_s > 30"}
    replies = decide(session, CTA, nudge)
    assert set(made_ahead(replies)) == {"cta"}
    manual = decide(session, {"slot": "manual", "variants": ["default", "b"]}, id=5)
    assert of(manual, "ahead") == []  # microadjust.decide(): the page shows it itself
    assert set(made_ahead(decide(session, CTA))) == {"cta"}
    for config, init in (({}, {"persist": False}), ({"ahead_expiry_s": 0}, {})):
        quiet = WorkerSession()
        quiet.handle({**INIT, "config": {"seed": 7, **config}, **init})
        assert of(decide(quiet, CTA), "ahead") == []


def test_a_reward_and_a_hidden_page_decide_the_next_view_again():
    session, _ = boot()
    first = made_ahead(decide(session, CTA))["cta"]
    session.handle(
        {"v": 1, "type": "events", "events": [{"kind": "applied", "slot": "cta", "t": 1}]}
    )
    replies = as_host(session, {"v": 1, "type": "reward", "goal": "buy", "value": 1, "slot": "cta"})
    after_reward = made_ahead(replies)["cta"]
    hidden = session.handle({"v": 1, "type": "events", "events": [{"kind": "hidden", "t": 2}]})
    after_hidden = made_ahead(hidden)["cta"]
    assert len({first["event_id"], after_reward["event_id"], after_hidden["event_id"]}) == 3
    kept = [one.event_id for one in session.ahead.issued["cta"]]
    assert kept == [first["event_id"], after_reward["event_id"], after_hidden["event_id"]][-KEPT:]


def test_a_bad_expiry_is_a_clear_error():
    replies = json.loads(
        WorkerSession().handle_json(json.dumps({**INIT, "config": {"ahead_expiry_s": -1}}))
    )
    assert (
        replies[0]["fatal"]
        and "ahead_expiry_s must be a number of seconds >= 0" in (replies[0]["message"])
    )


# --- the worker: adopting what the page showed ----------------------------------------------


def test_an_adopted_decision_is_this_views_and_learns_with_the_propensity_it_was_drawn_with():
    session, ahead, init = returning(CTA, log_size=16)
    assert of(init, "error") == []
    cta = ahead["cta"]
    assert session.attribution.open[cta["event_id"]].slot == "cta"  # shown from first paint
    session.handle(
        {"v": 1, "type": "events", "events": [{"kind": "impression", "slot": "cta", "t": 1200}]}
    )
    [rewarded] = of(
        as_host(session, {"v": 1, "type": "reward", "goal": "buy", "value": 1, "slot": "cta"}),
        "rewarded",
    )
    assert rewarded["event_ids"] == [cta["event_id"]]
    [logged] = session.engine.log("cta")
    assert logged["event_id"] == cta["event_id"] and logged["action"] == cta["variant"]
    assert logged["propensity"] == cta["probability"] and logged["reward"] == 1.0
    kept = [one.event_id for one in session.ahead.issued["cta"]]  # the next view's, since
    assert cta["event_id"] not in kept  # each is shown at most once


def test_a_slot_showing_a_decision_made_ahead_is_not_decided_again_unless_it_is_live():
    session, ahead, _ = returning(CTA, CARDS)
    replies = decide(session, CTA, CARDS)
    assert [d for r in of(replies, "decisions") for d in r["decisions"]] == []  # one per view
    assert set(made_ahead(replies)) == {"cta", "cards"}  # and the next view's
    live, live_ahead, _ = returning({**CTA, "live": True})
    [decisions] = of(decide(live, {**CTA, "live": True}), "decisions")
    [again] = decisions["decisions"]
    assert again["event_id"] != live_ahead["cta"]["event_id"]  # decided now, on top of it
    assert live_ahead["cta"]["event_id"] in live.attribution.open


def test_an_adopted_ranking_rewards_the_clicked_position_and_zero_above_it():
    session, ahead, _ = returning(CARDS, log_size=16)
    order = ahead["cards"]["order"]
    replies = session.handle(
        {"v": 1, "type": "reward", "goal": "add", "value": 1, "slot": "cards", "item": order[1]}
    )
    assert len(of(replies, "rewarded")[0]["event_ids"]) == 2
    learned = {entry["action"]: entry["reward"] for entry in session.engine.log("cards")}
    assert learned == {order[0]: 0.0, order[1]: 1.0}


def test_a_decision_made_ahead_unused_until_it_expires_teaches_nothing(monkeypatch):
    clock = Clock(monkeypatch)
    first, _ = boot(default_reward=0.0, attribution_window_s=60)
    replies = decide(first, CTA)
    [save] = of(replies, "save")
    engine_before = save["state"]["engine"]
    clock.now += 24 * 3600 + 1  # the next page view comes a day later, without the cache
    session, init = boot(save["state"], [shown(made_ahead(replies)["cta"], CTA)])
    [refused] = of(init, "error")
    assert "has expired" in refused["message"] and not refused.get("fatal")
    assert session.ahead.issued == {}
    assert session.engine.state()["slots"] == engine_before["slots"]  # nothing learned
    assert session.engine.log() == []


@pytest.mark.parametrize(
    "tamper, complaint",
    [
        (lambda e: {**e, "event_id": e["event_id"] + "0"}, "not a decision made ahead"),
        (lambda e: {**e, "variants": ["default", "discount", "new"]}, "offers"),
        (lambda e: {**e, "variant": "quiz" if e["variant"] != "quiz" else "default"}, "shows"),
        (lambda e: {**e, "slot": "hero"}, "not a decision made ahead"),
    ],
    ids=["unknown event", "variants changed", "another variant", "another slot"],
)
def test_a_decision_made_ahead_the_device_cannot_stand_behind_is_refused_and_changes_nothing(
    tamper, complaint
):
    first, _ = boot()
    replies = decide(first, CTA)
    [save] = of(replies, "save")
    entry = shown(made_ahead(replies)["cta"], CTA)
    untouched, _ = boot(save["state"])
    session, init = boot(save["state"], [tamper(entry)])
    [refused] = of(init, "error")
    assert complaint in refused["message"] and "is decided now" in refused["message"]
    assert refused.get("fatal") is not True
    assert json.dumps(session.snapshot()) == json.dumps(untouched.snapshot())
    assert of(decide(session, CTA), "decisions")[0]["decisions"]  # decided live instead


@pytest.mark.parametrize(
    "ahead",
    [{"not": "a list"}, [{"slot": "cta"}], [{**CTA, "variant": "quiz"}], [{**CTA, "live": "yes"}]],
)
def test_a_malformed_ahead_field_starts_the_engine_without_adopting_anything(ahead):
    first, _ = boot()
    [save] = of(decide(first, CTA), "save")
    untouched, _ = boot(save["state"])
    session, init = boot(save["state"], ahead)
    [error] = of(init, "error")
    assert "no decision made ahead is adopted: 'init' message: ahead" in error["message"]
    assert of(init, "ready") and json.dumps(session.snapshot()) == json.dumps(untouched.snapshot())


def test_the_set_before_the_newest_is_still_adoptable_and_the_others_of_the_slot_go():
    """The page was closed before the newest set reached it: it holds the one before."""
    first, _ = boot()
    older = made_ahead(decide(first, CTA))["cta"]
    first.handle({"v": 1, "type": "events", "events": [{"kind": "hidden", "t": 5}]})
    session, init = boot(first.snapshot(), [shown(older, CTA)])
    assert of(init, "error") == [] and session.decided["cta"].ahead
    assert "cta" not in session.ahead.issued
    saved = json.loads(json.dumps(session.snapshot()))
    restored, _ = boot(saved)
    assert restored.ahead.to_state() == session.ahead.to_state()


def test_a_checkpoint_with_unusable_decisions_made_ahead_keeps_everything_else():
    first, _ = boot()
    [save] = of(decide(first, CTA), "save")
    broken = {**save["state"], "ahead": {"declared": {}, "issued": {"cta": [{"ranking": 1}]}}}
    session, init = boot(broken)
    [error] = of(init, "error")
    assert "decisions made ahead dropped: ahead.issued['cta'][0]" in error["message"]
    assert of(init, "ready")[0]["restored"] is True and session.ahead.issued == {}
    assert session.engine.state() == first.engine.state()
