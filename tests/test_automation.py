"""Bot and automation filtering in the worker session: an automated page view is shown its
decisions but learns, keeps and uploads nothing, unless the site says ``"automation": "learn"``."""

from __future__ import annotations

import json

import pytest

from microadjust.browser.automation import MIN_CLICK_GAP_MS, MIN_GOAL_MS, Automation
from microadjust.browser.protocol import ProtocolError
from microadjust.browser.session import WorkerSession

CTA = {"slot": "cta", "variants": ["default", "discount", "quiz"]}
SYNC = {"url": "https://sync.example", "site": "shop", "key": "k", "upload": True}
HUMAN = {"kind": "input", "t": 900}  # the visitor's first trusted pointer, touch or key input
PRIORS = {  # the sync server's document before any publication: the device counts from it
    "v": 2,
    "site": "shop",
    "version": 0,
    "cells": {},
    "upload": {"max_shown": 4, "period_s": 86_400},
    "privacy": {"sigma": 0.0},
    "slots": {},
}


def started(automated: bool = False, **config) -> WorkerSession:
    session = WorkerSession()
    # no decisions made ahead: they save on their own, and these tests read the checkpoint
    init = {
        "v": 1,
        "type": "init",
        "config": {"seed": 7, "sync": SYNC, "ahead_expiry_s": 0, **config},
    }
    session.handle({**init, "priors": PRIORS, "automated": automated})
    return session


def page(session: WorkerSession, kind: str, **fields) -> list[dict]:
    return session.handle({"v": 1, "type": kind, **fields})


def host(session: WorkerSession, kind: str) -> list[dict]:
    return session.handle({"v": 1, "type": kind}, from_host=True)


def events(session: WorkerSession, *batch: dict) -> list[dict]:
    return page(session, "events", events=list(batch))


def shown_and_seen(session: WorkerSession) -> str:
    """A decision for the slot, applied and seen; its event id."""
    [decisions] = [r for r in page(session, "decide", slots=[CTA]) if r["type"] == "decisions"]
    events(session, {"kind": "applied", "slot": "cta", "t": 1000})
    events(session, {"kind": "impression", "slot": "cta", "t": 2000})
    return decisions["decisions"][0]["event_id"]


def click_goal(session: WorkerSession, t: float = 3000) -> dict:
    replies = page(session, "reward", goal="buy", value=1, slot="cta", t=t)
    return next(r for r in replies if r["type"] == "rewarded")


def uploads(session: WorkerSession) -> list[dict]:
    """What the page being hidden and the upload timer would send to the sync server."""
    hidden = events(session, {"kind": "hidden", "t": 5000})
    return [r for r in [*hidden, *host(session, "sync_upload")] if r["type"] == "upload"]


def counted(sent: list[dict]) -> dict[str, int]:
    """The exposure and reward counts of the shown variant in the (one, maybe retried) batch."""
    [body] = {upload["body"] for upload in sent}
    [counts] = json.loads(body)["slots"]["cta"]["variants"].values()
    return counts


def learned(session: WorkerSession) -> list[float]:
    return [entry["reward"] for entry in session.engine.log("cta") if entry["reward"] is not None]


def test_a_person_learns_keeps_and_uploads():
    session = started()
    events(session, HUMAN)
    event_id = shown_and_seen(session)
    assert click_goal(session)["event_ids"] == [event_id]
    assert learned(session) == [1.0] and session.automation.reason is None
    assert [r["type"] for r in host(session, "checkpoint")] == ["save"]
    assert counted(uploads(session)) == {"shown": 1, "reward": 1}


def test_a_webdriver_session_is_shown_decisions_but_learns_keeps_and_uploads_nothing():
    session = started(automated=True)
    ready = session.snapshot()
    events(session, HUMAN)
    shown_and_seen(session)  # decided and applied as for anyone: the page looks the same
    rewarded = click_goal(session)
    assert rewarded["event_ids"] == []
    assert rewarded["ignored"] == "this page view looks automated: navigator.webdriver is set"
    assert learned(session) == [] and session.rewards == 0
    assert session.snapshot()["sync"] == ready["sync"]  # no exposure, no reward counted
    assert host(session, "checkpoint") == [] and uploads(session) == []
    assert not [r for r in page(session, "decide", slots=[CTA]) if r["type"] == "unsaved"]


def test_ready_says_from_the_start_why_an_automated_page_view_learns_nothing():
    def ready(**init) -> dict:
        session = WorkerSession()
        config = {"seed": 7, **init.pop("config", {})}
        replies = session.handle({"v": 1, "type": "init", "config": config, **init})
        return next(r for r in replies if r["type"] == "ready")

    told = ready(automated=True)["ignored"]
    assert told == "this page view looks automated: navigator.webdriver is set"
    assert "ignored" not in ready(automated=False)
    assert "ignored" not in ready(automated=True, config={"automation": "learn"})


def test_learn_lets_an_automated_session_learn_keep_and_upload():
    session = started(automated=True, automation="learn")
    events(session, HUMAN)
    event_id = shown_and_seen(session)
    assert click_goal(session)["event_ids"] == [event_id] and learned(session) == [1.0]
    assert [r["type"] for r in host(session, "checkpoint")] == ["save"]
    assert counted(uploads(session)) == {"shown": 1, "reward": 1}
    assert "automation" not in session.engine.params  # a worker option, not the engine's


@pytest.mark.parametrize(
    ("before", "t", "reason"),
    [
        ([], 3000, "a goal before any pointer, touch or key input"),
        ([{**HUMAN, "t": 100}], MIN_GOAL_MS - 1, f"a goal {MIN_GOAL_MS - 1} ms after the page"),
        (
            [HUMAN, {"kind": "click", "t": 950}, {"kind": "click", "t": 949 + MIN_CLICK_GAP_MS}],
            3000,
            f"two clicks {MIN_CLICK_GAP_MS - 1} ms apart",
        ),
    ],
    ids=["no input before the goal", "a goal too soon", "clicks too fast"],
)
def test_evidence_of_automation_stops_learning_for_the_rest_of_the_page_view(before, t, reason):
    session = started()
    events(session, *before)
    shown_and_seen(session)
    rewarded = click_goal(session, t=t)
    assert rewarded["event_ids"] == [] and reason in rewarded["ignored"]
    events(session, HUMAN)
    assert (
        click_goal(session)["event_ids"] == []
    )  # it stays automated: later input does not clear it
    assert learned(session) == [] and uploads(session) == []


def test_a_goal_from_javascript_on_page_load_is_no_evidence():
    """A thank-you page rewards on load: the visitor's input was on the page before it."""
    session = started()
    event_id = shown_and_seen(session)
    [rewarded] = [
        r for r in page(session, "reward", goal="buy", value=1) if r["type"] == "rewarded"
    ]
    assert rewarded["event_ids"] == [event_id] and session.automation.reason is None


def test_clicks_made_by_a_script_or_a_person_at_human_speed_are_no_evidence():
    session = started()
    fast_script = [{"kind": "click", "t": 950, "trusted": False}] * 2
    human_pace = [{"kind": "click", "t": 1500}, {"kind": "click", "t": 1500 + MIN_CLICK_GAP_MS}]
    events(session, HUMAN, *fast_script, *human_pace)
    event_id = shown_and_seen(session)
    assert click_goal(session, t=MIN_GOAL_MS)["event_ids"] == [event_id]


@pytest.mark.parametrize("mode", ["Ignore", "", 1, None, True])
def test_a_bad_automation_setting_is_refused_and_leaves_the_session_unstarted(mode):
    session = WorkerSession()
    with pytest.raises(ProtocolError, match="config 'automation' must be one of 'ignore', 'learn'"):
        session.handle({"v": 1, "type": "init", "config": {"automation": mode}})
    assert session.engine is None


def test_a_bad_click_or_goal_time_is_refused_without_a_change():
    session = started()
    with pytest.raises(ProtocolError, match="trusted must be a boolean"):
        events(session, {"kind": "click", "t": 1, "trusted": "yes"})
    with pytest.raises(ProtocolError, match="'t' must be int or float"):
        page(session, "reward", goal="buy", value=1, t="soon")
    assert session.automation == Automation()


def test_the_verdict_is_the_first_evidence():
    view = Automation.configure("ignore", webdriver=True)
    view.goal_clicked(t_ms=10)
    assert view.reason == "navigator.webdriver is set" and not view.learns
