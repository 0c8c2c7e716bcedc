"""The worker's message handler, on CPython: the same code the browser runs under Pyodide."""

from __future__ import annotations

import json

import pytest

from microadjust.protocol import ProtocolError
from microadjust.worker import WorkerSession

INIT = {"v": 1, "type": "init", "config": {"seed": 7}, "context": {"device": "mobile"}}
DECIDE = {
    "v": 1,
    "type": "decide",
    "context": {"device": "mobile", "hour": 9},
    "slots": [
        {"slot": "cta", "variants": ["default", "discount", "quiz"]},
        {"slot": "hero", "variants": ["default", "deal"]},
    ],
}


def started() -> WorkerSession:
    session = WorkerSession()
    session.handle(INIT)
    return session


def test_init_replies_ready_and_decide_picks_a_variant_per_slot():
    session = WorkerSession()
    [ready] = session.handle(INIT)
    assert ready == {
        "v": 1,
        "type": "ready",
        "engine": "0.1.0",
        "restored": False,
        "visits": 1,
        "rewards": 0,
        "boot_ms": None,
    }
    [reply] = session.handle(DECIDE)
    assert reply["type"] == "decisions"
    chosen = {d["slot"]: d for d in reply["decisions"]}
    assert chosen["cta"]["variant"] in ("default", "discount", "quiz")
    assert chosen["hero"]["variant"] in ("default", "deal")
    assert all(0 < d["probability"] <= 1 and d["event_id"] and d["reason"] for d in chosen.values())


def test_a_reward_goes_to_the_slots_last_decision_once():
    session = started()
    [decisions] = session.handle(DECIDE)
    cta = next(d for d in decisions["decisions"] if d["slot"] == "cta")
    [rewarded] = session.handle({"v": 1, "type": "reward", "slot": "cta", "value": 1})
    assert rewarded["event_id"] == cta["event_id"] and session.rewards == 1
    with pytest.raises(ProtocolError, match="no decision to reward"):
        session.handle({"v": 1, "type": "reward", "slot": "cta", "value": 1})


def test_a_checkpoint_restores_the_engine_on_the_next_visit():
    session = started()
    session.handle(DECIDE)
    session.handle({"v": 1, "type": "reward", "slot": "cta", "value": 1})
    saved = json.loads(session.checkpoint())
    assert session.dirty is False
    again = WorkerSession()
    [ready] = again.handle({**INIT, "state": saved})
    assert ready["restored"] is True and ready["visits"] == 2 and ready["rewards"] == 1
    assert again.engine.state() == session.engine.state()


def test_an_unusable_checkpoint_starts_afresh_with_a_note():
    session = WorkerSession()
    note, ready = session.handle({**INIT, "state": {"schema": 99}})
    assert note["type"] == "error" and "starting afresh" in note["message"]
    assert ready["type"] == "ready" and ready["restored"] is False


def test_behaviour_events_become_context_signals():
    session = started()
    events = [{"kind": "scroll", "t": 1000, "depth": 0.6}, {"kind": "click", "t": 4000}]
    assert session.handle({"v": 1, "type": "events", "events": events}) == []
    assert session.signals.snapshot()["scroll_depth"] == 0.6
    assert session.signals.snapshot()["clicks"] == 1


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"v": 2, "type": "decide"}, "protocol version 2"),
        ({"v": 1, "type": "teleport"}, "unknown message type 'teleport'"),
        (
            {"v": 1, "type": "events", "events": [{"kind": "scroll", "t": 1, "depth": 3}]},
            "depth between 0 and 1",
        ),
        ({"v": 1, "type": "events", "events": [{"kind": "click", "t": -5}]}, "events\\[0\\]"),
        ({"v": 1, "type": "decide", "slots": [{"slot": "x", "variants": "ab"}]}, "slots\\[0\\]"),
        ({"v": 1, "type": "reward", "slot": "cta", "value": float("nan")}, "must be finite"),
        ({"v": 1, "type": "reward", "slot": 3, "value": 1}, "'slot' must be str"),
        ({"v": 1, "type": "init", "config": {}}, "already initialized"),
    ],
)
def test_a_bad_message_is_rejected_and_changes_nothing(message, complaint):
    session = started()
    session.handle(DECIDE)
    before = session.checkpoint(), session.signals, dict(session.last_event)
    with pytest.raises(ProtocolError, match=complaint):
        session.handle(message)
    assert (session.checkpoint(), session.signals, session.last_event) == before


def test_a_bad_slot_keeps_its_default_while_the_others_are_decided():
    session = started()
    message = {
        **DECIDE,
        "slots": [
            {"slot": "ok", "variants": ["default", "b"]},
            {"slot": "dup", "variants": ["a", "a"]},
        ],
    }
    decisions, error = session.handle(message)
    assert [d["slot"] for d in decisions["decisions"]] == ["ok"]
    assert error["type"] == "error" and "'dup' keeps its default" in error["message"]


def test_handle_json_never_raises_and_says_what_was_wrong():
    session = WorkerSession()
    [early] = json.loads(session.handle_json(json.dumps({"v": 1, "type": "decide", "slots": []})))
    assert early["type"] == "error" and "before 'init'" in early["message"] and early["fatal"]
    [bad_config] = json.loads(session.handle_json(json.dumps({**INIT, "config": {"colour": 1}})))
    assert bad_config["fatal"] is True and "colour" in bad_config["message"]
    [ready] = json.loads(session.handle_json(json.dumps(INIT)))
    assert ready["type"] == "ready"
    [late] = json.loads(session.handle_json("[]"))
    assert late["type"] == "error" and late["fatal"] is False
