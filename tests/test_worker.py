"""The worker's message handler, on CPython: the same code the browser runs under Pyodide."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from microadjust.browser import protocol
from microadjust.browser.protocol import HOST_REPLIES, ProtocolError, routes
from microadjust.browser.session import WorkerSession

INIT = {"v": 1, "type": "init", "config": {"seed": 7}, "context": {"device": "mobile"}}
CTA = {"slot": "cta", "variants": ["default", "discount", "quiz"]}
HERO = {"slot": "hero", "variants": ["default", "deal"]}
CARDS = {"slot": "cards", "items": ["huila", "yirga", "night"]}
HUMAN = {"kind": "input", "t": 10}  # the visitor's first trusted pointer, touch or key input


def started(**config) -> WorkerSession:
    """A session of a person: their first pointer input came before anything else."""
    session = WorkerSession()
    session.handle({**INIT, "config": {"seed": 7, **config}})
    events(session, HUMAN)
    return session


def to_page(replies: list[dict]) -> list[dict]:
    """The replies web/worker.js posts to the page (it acts on the host replies itself)."""
    return [r for r in replies if r["type"] not in HOST_REPLIES]


def send(session: WorkerSession, message: dict) -> list[dict]:
    """A page message; the replies the page gets."""
    return to_page(session.handle({"v": 1, **message}))


def host(session: WorkerSession, kind: str, **fields) -> list[dict]:
    """A message of web/worker.js itself; all the replies."""
    return session.handle({"v": 1, "type": kind, **fields}, from_host=True)


def decide(session: WorkerSession, *slots: dict, **fields) -> dict[str, dict]:
    replies = session.handle({"v": 1, "type": "decide", "slots": list(slots), **fields})
    decided = [d for r in replies if r["type"] == "decisions" for d in r["decisions"]]
    return {d["slot"]: d for d in decided}


def events(session: WorkerSession, *batch: dict, t: float | None = None) -> list[dict]:
    return send(session, {"type": "events", "events": list(batch), "t": t})


def shown_and_seen(session: WorkerSession, slot: str, t: float = 100) -> None:
    events(
        session,
        {"kind": "applied", "slot": slot, "t": t},
        {"kind": "impression", "slot": slot, "t": t + 1000},
    )


def reward(session: WorkerSession, goal: str = "buy", value: float = 1, **where) -> dict:
    replies = send(session, {"type": "reward", "goal": goal, "value": value, **where})
    [rewarded] = [r for r in replies if r["type"] == "rewarded"]
    return rewarded


def test_init_replies_ready_and_decide_picks_a_variant_per_slot():
    session = WorkerSession()
    [ready] = to_page(session.handle(INIT))
    assert ready == {
        "v": 1,
        "type": "ready",
        "engine": "0.1.0",
        "restored": False,
        "visits": 1,
        "rewards": 0,
        "boot_ms": None,
        "max_slots": 32,
    }
    chosen = decide(session, CTA, HERO)
    assert chosen["cta"]["variant"] in CTA["variants"]
    assert chosen["hero"]["variant"] in HERO["variants"]
    assert all(0 < d["probability"] <= 1 and d["event_id"] and d["reason"] for d in chosen.values())


def test_a_ranking_orders_every_item_once():
    session = started()
    ranking = decide(session, CARDS)["cards"]
    assert sorted(ranking["order"]) == sorted(CARDS["items"])
    assert ranking["variant"] == ranking["order"][0]


def test_a_goal_in_a_slot_rewards_that_slots_decision_once_it_was_shown():
    session = started()
    cta = decide(session, CTA)["cta"]
    assert reward(session, slot="cta")["event_ids"] == []  # not on screen yet: nothing learned
    events(session, {"kind": "applied", "slot": "cta", "t": 50})
    assert reward(session, slot="cta")["event_ids"] == [cta["event_id"]]
    assert reward(session, slot="cta")["event_ids"] == []  # one reward per decision
    assert session.rewards == 1


def test_a_goal_from_javascript_rewards_every_seen_decision_and_only_those():
    session = started()
    chosen = decide(session, CTA, HERO)
    events(
        session,
        {"kind": "applied", "slot": "cta", "t": 50},
        {"kind": "applied", "slot": "hero", "t": 50},
    )
    shown_and_seen(session, "cta")
    assert reward(session, "signup", 5)["event_ids"] == [chosen["cta"]["event_id"]]


def test_a_ranking_goal_rewards_the_clicked_position_and_zero_above_it():
    session = started(log_size=16)
    ranking = decide(session, CARDS)["cards"]
    shown_and_seen(session, "cards")
    clicked = ranking["order"][1]
    rewarded = reward(session, slot="cards", item=clicked)["event_ids"]
    assert len(rewarded) == 2  # the top position (0) and the clicked one (1)
    learned = {entry["action"]: entry["reward"] for entry in session.engine.log("cards")}
    assert learned == {ranking["order"][0]: 0.0, clicked: 1.0}


def test_a_seen_decision_learns_zero_when_its_window_closes_unrewarded(monkeypatch):
    session = started(attribution_window_s=5, log_size=16)
    clock = [1000.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    decide(session, CTA, HERO)
    clock[0] += 0.5  # the page applies a decision a moment after the engine made it
    shown_and_seen(session, "cta")
    events(session, {"kind": "applied", "slot": "hero", "t": 100})  # shown, never seen
    clock[0] += 6
    events(session)
    assert [(e["slot"], e["reward"]) for e in session.engine.log()] == [("cta", 0.0)]
    assert session.attribution.open == {}


def test_a_trigger_holds_a_slot_back_until_the_signals_meet_it():
    session = started()
    nudge = {
        "slot": "nudge",
        "variants": ["default", "reviews"],
        "trigger": "dwell_s > 30 && scroll_depth < 0.25",
    }
    assert decide(session, nudge, t=1000) == {}
    assert "nudge" in session.waiting
    [reply] = events(session, {"kind": "scroll", "t": 20_000, "depth": 0.1}, t=31_000)
    assert [d["slot"] for d in reply["decisions"]] == ["nudge"]
    assert session.waiting == {}


def test_a_trigger_that_never_holds_never_decides():
    session = started()
    nudge = {"slot": "nudge", "variants": ["default", "b"], "trigger": "scroll_depth < 0.25"}
    decide(session, nudge, t=0)
    assert events(session, {"kind": "scroll", "t": 10, "depth": 0.9}, t=60_000) == []


@pytest.mark.parametrize(
    ("trigger", "anomalies"),
    [
        ("rage_clicks >= 2", ["rage_click", "rage_click"]),
        ("dead_clicks > 0 && clicks >= 1", ["click", "dead_click"]),
        ("exit_intent", ["exit_intent"]),
        ("scroll_back >= 1 && !exit_intent", ["scroll_back"]),
    ],
)
def test_a_trigger_on_a_behavioural_anomaly_decides_once_the_page_reports_it(trigger, anomalies):
    session = started()
    offer = {"slot": "offer", "variants": ["default", "deal"], "trigger": trigger}
    assert decide(session, offer, t=1000) == {}
    *before, last = [{"kind": kind, "t": 2000 + i} for i, kind in enumerate(anomalies)]
    assert events(session, *before, t=3000) == []  # one short of the trigger
    [reply] = events(session, last, t=4000)
    assert [d["slot"] for d in reply["decisions"]] == ["offer"]
    seen_by_the_engine = session.decided["offer"].context  # context features too
    assert {"rage_clicks", "dead_clicks", "exit_intent", "scroll_back"} <= set(seen_by_the_engine)


@pytest.mark.parametrize(
    ("trigger", "complaint"),
    [
        ("dwell_s > > 3", "position 10"),
        ("mood == 'happy'", "unknown signal 'mood'"),
        ("rage_click > 0", "unknown signal 'rage_click'; known: clicks, dead_clicks, device"),
    ],
)
def test_a_malformed_trigger_is_reported_for_its_slot(trigger, complaint):
    session = started()
    replies = send(
        session,
        {
            "type": "decide",
            "slots": [{"slot": "bad", "variants": ["default", "b"], "trigger": trigger}, CTA],
        },
    )
    decisions, error = replies  # the next view's are made in a task of their own:
    [_, ahead] = host(session, "decide_ahead")
    assert [d["slot"] for d in ahead["decisions"]] == ["cta"]  # triggers are not decided ahead
    assert [d["slot"] for d in decisions["decisions"]] == ["cta"]
    assert error["slot"] == "bad" and complaint in error["message"]


def test_a_checkpoint_restores_engine_counts_and_open_decisions():
    session = started()
    decide(session, CTA)
    shown_and_seen(session, "cta")
    [save] = host(session, "checkpoint")
    assert save["type"] == "save" and session.dirty is False
    again = WorkerSession()
    [ready] = to_page(again.handle({**INIT, "state": json.loads(json.dumps(save["state"]))}))
    assert ready["restored"] is True and ready["visits"] == 2
    assert again.engine.state() == session.engine.state()
    events(again, HUMAN)
    assert reward(again, "buy")["event_ids"]  # a conversion on the next page view counts


def test_an_unusable_checkpoint_starts_afresh_with_a_note():
    session = WorkerSession()
    note, ready = to_page(session.handle({**INIT, "state": {"schema": 99}}))
    assert note["type"] == "error" and "starting afresh" in note["message"]
    assert ready["type"] == "ready" and ready["restored"] is False


def test_a_new_page_view_starts_behaviour_afresh():
    session = started()
    events(session, {"kind": "scroll", "t": 1000, "depth": 0.6})
    session.handle({"v": 1, "type": "page", "context": {"page": "product"}})
    assert session.signals.scroll_depth == 0 and session.context == {"page": "product"}


def test_forget_erases_the_visitor_and_export_shows_everything_kept():
    session = started()
    decide(session, CTA)
    shown_and_seen(session, "cta")
    reward(session)
    [exported] = send(session, {"type": "export", "id": 3})
    assert exported["id"] == 3 and exported["data"]["rewards"] == 1
    assert exported["data"]["engine"]["format"] == "microadjust.core.engine"
    erase, forgotten = session.handle({"v": 1, "type": "forget", "id": 4})
    assert erase["type"] == "erase"  # the stored copy goes before the page hears it is gone
    assert forgotten == {"v": 1, "type": "forgotten", "id": 4}
    fresh = session.snapshot()
    assert fresh["rewards"] == 0 and fresh["attribution"] == {}
    assert fresh["engine"]["slots"] == {}


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
        ({"v": 1, "type": "events", "events": [{"kind": "applied", "t": 5}]}, "slot name"),
        ({"v": 1, "type": "decide", "slots": [{"slot": "x", "variants": "ab"}]}, "slots\\[0\\]"),
        (
            {"v": 1, "type": "decide", "slots": [{"slot": "x", "variants": [], "trigger": 3}]},
            "trigger must be a string",
        ),
        ({"v": 1, "type": "reward", "goal": "buy", "value": float("nan")}, "must be finite"),
        ({"v": 1, "type": "reward", "goal": "buy", "value": 1, "slot": 3}, "'slot' must be str"),
        ({"v": 1, "type": "reward", "value": 1}, "'goal' must be str"),
        ({"v": 1, "type": "init", "config": {}}, "already initialized"),
        ({"v": 1, "type": "checkpoint"}, "'checkpoint' is a message of the worker host"),
        ({"v": 1, "type": "sync_result", "batch_id": "b", "status": 201}, "worker host"),
        ({"v": 1, "type": "consent", "granted": "yes"}, "'granted' must be bool"),
    ],
)
def test_a_bad_message_is_rejected_and_changes_nothing(message, complaint):
    session = started()
    decide(session, CTA)
    shown_and_seen(session, "cta")
    before = json.dumps(session.snapshot()), session.signals, dict(session.decided)
    fingerprint = session.fingerprint()
    with pytest.raises(ProtocolError, match=complaint):
        session.handle(message)
    assert (json.dumps(session.snapshot()), session.signals, session.decided) == before
    assert session.fingerprint() == fingerprint


def test_a_bad_slot_keeps_its_default_while_the_others_are_decided():
    session = started()
    replies = send(
        session,
        {
            "type": "decide",
            "slots": [
                {"slot": "ok", "variants": ["default", "b"]},
                {"slot": "dup", "variants": ["a", "a"]},
            ],
        },
    )
    decisions, error = replies
    assert [d["slot"] for d in decisions["decisions"]] == ["ok"]
    assert error["slot"] == "dup" and "keeps its default" in error["message"]


def test_handle_json_never_raises_and_says_what_was_wrong():
    session = WorkerSession()
    [early] = json.loads(session.handle_json(json.dumps({"v": 1, "type": "decide", "slots": []})))
    assert early["type"] == "error" and "before 'init'" in early["message"] and early["fatal"]
    [bad_config] = json.loads(session.handle_json(json.dumps({**INIT, "config": {"colour": 1}})))
    assert bad_config["fatal"] is True and "colour" in bad_config["message"]
    ready, plan, unsaved = json.loads(session.handle_json(json.dumps(INIT)))
    assert [ready["type"], plan["type"], unsaved["type"]] == ["ready", "plan", "unsaved"]
    [late] = json.loads(session.handle_json("[]"))
    assert late["type"] == "error" and late["fatal"] is False


def test_segments_group_behaviour_once_scikit_learn_has_loaded():
    session = WorkerSession()
    *_, plan, _ = session.handle({**INIT, "config": {"segments": {"n": 2}, "log_size": 64}})
    assert plan["type"] == "plan" and plan["packages"] == ["scikit-learn"]
    for i in range(6):  # quick skimmers and slow readers
        slow = i % 2 == 1
        depth = 0.9 if slow else 0.1
        events(session, {"kind": "scroll", "t": 1000 * i, "depth": depth})
        decide(session, {"slot": f"s{i}", "variants": ["default", "b"]}, t=1000 * i)
    segments = session.segments
    assert segments.segmenter.centers is None  # scikit-learn is not there yet: rows wait
    host(session, "packages_loaded", packages=["scikit-learn"])
    decide(session, {"slot": "after", "variants": ["default", "b"]})
    assert segments.segmenter.centers is not None and segments.rows == []
    last = session.engine.state()["pending"][-1][1]
    assert last["slot"] == "after" and last["context"]["segment"] in ("seg0", "seg1")
    again = WorkerSession()
    again.handle({**INIT, "config": {"segments": {"n": 2}}, "state": session.snapshot()})
    assert again.segments.segmenter.centers.tolist() == segments.segmenter.centers.tolist()


def test_without_segments_no_package_loads_lazily():
    *_, plan, _ = WorkerSession().handle(INIT)
    assert plan == {"v": 1, "type": "plan", "packages": [], "upload_interval_ms": None}


# --- the boundary: one dispatch table, host messages, derived persistence ----------------------


def test_the_dispatch_table_routes_every_message_type_and_protocol_py_documents_each():
    session = WorkerSession()
    table = routes(session)
    handlers = {name.removeprefix("on_") for name in vars(WorkerSession) if name.startswith("on_")}
    assert set(table) == handlers
    assert {kind for kind, route in table.items() if route.sender == "host"} == {
        "checkpoint",
        "sync_upload",
        "sync_result",
        "packages_loaded",
        "decide_ahead",
    }
    for kind in [*table, *HOST_REPLIES]:
        assert re.search(rf"^{kind}\s", protocol.__doc__, re.MULTILINE), kind


def test_an_unknown_message_type_gets_a_clear_error_reply_and_changes_nothing():
    session = started()
    decide(session, CTA)
    before, fingerprint = json.dumps(session.snapshot()), session.fingerprint()
    [error] = json.loads(session.handle_json(json.dumps({"v": 1, "type": "teleport"}), True))
    assert error["type"] == "error" and error["fatal"] is False
    assert "unknown message type 'teleport'; expected one of [" in error["message"]
    assert "'checkpoint'" in error["message"]  # the list names every known type
    assert json.dumps(session.snapshot()) == before and session.fingerprint() == fingerprint


def test_replies_say_unsaved_while_what_the_device_keeps_differs_from_the_last_checkpoint():
    session = started()
    assert session.dirty and host(session, "checkpoint")[0]["type"] == "save"
    assert not session.dirty and host(session, "checkpoint") == []  # nothing new to store
    assert session.handle({"v": 1, "type": "export", "id": 1})[-1]["type"] == "exported"
    assert events(session, {"kind": "scroll", "t": 10, "depth": 0.5}) == []  # behaviour only
    replies = session.handle({"v": 1, "type": "decide", "slots": [CTA]})
    assert [r["type"] for r in replies][-2:] == ["ahead_due", "unsaved"]
    replies = host(session, "decide_ahead")
    assert [r["type"] for r in replies] == ["save", "ahead"]  # stored with the next view's
    assert not session.dirty and replies[0]["state"] == session.snapshot()
    host(session, "checkpoint")
    replies = session.handle(
        {"v": 1, "type": "events", "events": [{"kind": "applied", "slot": "cta", "t": 20}]}
    )
    assert replies == [{"v": 1, "type": "unsaved"}]


def test_every_change_to_the_snapshot_makes_the_session_dirty():
    session = started(attribution_window_s=5)
    messages = [
        {"type": "decide", "slots": [CTA, CARDS]},
        {"type": "events", "events": [{"kind": "applied", "slot": "cta", "t": 1}]},
        {"type": "events", "events": [{"kind": "impression", "slot": "cta", "t": 2}]},
        {"type": "reward", "goal": "buy", "value": 1, "slot": "cta"},
        {"type": "decide", "slots": [HERO]},
        {"type": "events", "events": [{"kind": "applied", "slot": "hero", "t": 3}]},
        {"type": "page", "context": {"page": "two"}},
        {"type": "reward", "goal": "buy", "value": 1},
        {"type": "forget", "id": 1},
        {"type": "consent", "granted": True},
        {"type": "decide", "slots": [CTA]},
    ]
    for message in messages:
        host(session, "checkpoint")
        before = json.dumps(session.snapshot())
        replies = session.handle({"v": 1, **message})
        saved = [r["state"] for r in replies if r["type"] == "save"]  # with decisions made ahead
        if json.dumps(session.snapshot()) != before:
            assert session.dirty or saved == [session.snapshot()], message


def test_without_consent_nothing_is_offered_for_storing_until_it_is_given():
    session = WorkerSession()
    replies = session.handle({**INIT, "persist": False})
    assert [r["type"] for r in replies] == ["ready", "plan"]
    decide(session, CTA)
    assert host(session, "checkpoint") == []
    assert host(session, "consent", granted=True) == [{"v": 1, "type": "unsaved"}]
    [save] = host(session, "checkpoint")
    assert save["state"]["engine"]["slots"]["cta"]
    assert host(session, "consent", granted=False) == [{"v": 1, "type": "erase"}]
    decide(session, HERO)
    assert host(session, "checkpoint") == []


def test_a_checkpoint_of_the_format_visitors_have_stored_still_loads():
    """Keys and shapes as worker checkpoints were written before ``to_state`` (IndexedDB)."""
    from microadjust import Engine

    now = time.time()
    saved = {
        "schema": 1,
        "visits": 3,
        "rewards": 1,
        "attribution": {"e1": {"slot": "cta", "t": now, "seen": True, "item": None, "position": 0}},
        "engine": Engine(seed=1).state(),
        "sync": {"watermark": None, "pending": None, "attempts": 0, "uploaded": 2},
        "segments": {
            "signals": ["dwell_s", "scroll_depth", "clicks", "idle_s", "visits"],
            "n_segments": 2,
            "seed": 1,
            "batch_size": 256,
            "n": 0.0,
            "mean": [0.0] * 5,
            "m2": [0.0] * 5,
            "centers": [[0.0] * 5, [1.0] * 5],
            "buffer": [],
        },
    }
    session = WorkerSession()
    config = {"segments": {"n": 2}, "sync": {"site": "shop", "upload": True}}
    ready, *_ = session.handle({**INIT, "config": config, "state": saved})
    assert ready["restored"] is True and ready["visits"] == 4 and ready["rewards"] == 1
    assert session.attribution.conversions() == ["e1"]
    assert session.segments.segmenter.centers.tolist() == saved["segments"]["centers"]
    sync = session.sync.to_state()  # protocol v1's sums have no v2 equivalent: counts restart
    assert sync["uploaded"] == 0 and sync["pending"] is None
    assert session.sync.upload_interval_ms() == 60_000  # and sync stays on


BOOT_AND_DECIDE = """
import json, sys
from microadjust.browser.session import WorkerSession
session = WorkerSession()
session.handle_json(json.dumps({"v": 1, "type": "init", "config": {}, "context": {}}))
cta = {"slot": "cta", "variants": ["default", "b"]}
session.handle_json(json.dumps({"v": 1, "type": "decide", "slots": [cta], "t": 1000}))
later = ["microadjust.core.evaluation", "statistics", "microadjust.browser.site_priors"]
print(json.dumps([name for name in later if name in sys.modules]))
import microadjust
print(json.dumps([name for name in microadjust.__all__ if not hasattr(microadjust, name)]))
"""


def test_boot_and_a_first_decision_import_neither_evaluation_nor_site_priors():
    # each module the worker imports costs its boot: these load when first used
    out = subprocess.run(
        [sys.executable, "-c", BOOT_AND_DECIDE], capture_output=True, text=True, check=True
    )
    loaded, missing = map(json.loads, out.stdout.splitlines())
    assert loaded == [] and missing == []  # and every public name still resolves
