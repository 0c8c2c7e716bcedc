"""The worker session drives the v2 sync client: priors installed before a slot's first decision
on a page (only slots on the page), an exposure counted when the attribution rule says a decision
was seen, its reward when one is attributed, and the bodies the host POSTs. The last test sends
those bodies to the real server app and reads its next publication."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette suggests httpx2, which is not needed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from published import cell

from microadjust.browser.session import WorkerSession
from microadjust.server.api import create_app
from microadjust.server.config import SyncSettings
from microadjust.server.models import SiteDeclaration

KEY = "upload-key-123"
ADMIN = "admin-token-0123456789"
SYNC = {"url": "https://sync.example", "site": "shop", "key": KEY, "upload": True}
CELLS = {"device": ["desktop", "mobile"]}
CTA = {"slot": "cta", "variants": ["default", "discount", "quiz"]}
HERO = {"slot": "hero", "variants": ["default", "deal"]}
CARDS = {"slot": "cards", "items": ["huila", "yirga", "night"]}
MOBILE = {"device": "mobile"}
HUMAN = {"kind": "input", "t": 10}  # the first trusted pointer, touch or key input
MOBILE_CELL = "device=mobile"
RANDOM = {"policy": "epsilon_greedy", "epsilon": 1.0}  # scripted visitors: uniform exposure


def priors(version: int = 3) -> dict:
    """A published priors document: ``quiz`` wins on mobile, ``discount`` on desktop."""
    return {
        "v": 2,
        "site": "shop",
        "version": version,
        "cells": CELLS,
        "upload": {"max_shown": 4, "period_s": 86_400},
        "privacy": {"sigma": 0.0},
        "slots": {
            "cta": {
                "variants": CTA["variants"],
                "cells": {
                    "*": cell(800.0, default=40.0, discount=60.0, quiz=60.0),
                    MOBILE_CELL: cell(400.0, default=20.0, discount=10.0, quiz=50.0),
                    "device=desktop": cell(400.0, default=20.0, discount=50.0, quiz=10.0),
                },
            },
            "hero": {
                "variants": HERO["variants"],
                "cells": {"*": {"default": {"shown": 500.0, "reward": 5.0}}},
            },
            "cards": {"variants": CARDS["items"], "cells": {}},
        },
    }


def started(
    document: dict | None = None, context: dict | None = None, **init
) -> tuple[WorkerSession, list[dict]]:
    """A session of a visitor with sync on, given the fetched ``document``; and its replies
    (a person's: their first pointer input came first)."""
    session = WorkerSession()
    config = {
        "seed": init.pop("seed", 7),
        "policy": init.pop("policy", "auto"),
        "epsilon": init.pop("epsilon", 0.05),
        "holdout": init.pop("holdout", 0.0),
        "sync": {**SYNC, **init.pop("sync", {})},
    }
    message = {
        "v": 1,
        "type": "init",
        "config": config,
        "context": MOBILE if context is None else context,
        "priors": priors() if document is None else document,
        **init,
    }
    replies = session.handle(message)
    page(session, "events", events=[HUMAN])  # a person: their first input came before anything
    return session, replies


def host(session: WorkerSession, kind: str, **fields) -> list[dict]:
    """A message of web/worker.js itself; all the replies."""
    return session.handle({"v": 1, "type": kind, **fields}, from_host=True)


def page(session: WorkerSession, kind: str, **fields) -> list[dict]:
    return session.handle({"v": 1, "type": kind, **fields})


def decide(session: WorkerSession, *slots: dict) -> dict[str, dict]:
    replies = page(session, "decide", slots=list(slots))
    return {d["slot"]: d for r in replies if r["type"] == "decisions" for d in r["decisions"]}


def events(session: WorkerSession, *batch: dict) -> list[dict]:
    return page(session, "events", events=list(batch))


def applied(session: WorkerSession, slot: str) -> None:
    events(session, {"kind": "applied", "slot": slot, "t": 100})


def seen(session: WorkerSession, slot: str) -> None:
    events(session, {"kind": "impression", "slot": slot, "t": 1100})


def hidden(session: WorkerSession) -> list[dict]:
    """The page is hidden: the ``upload`` replies the host POSTs at once."""
    replies = events(session, {"kind": "hidden", "t": 5000})
    return [r for r in replies if r["type"] == "upload"]


def timer(session: WorkerSession) -> list[dict]:
    """The upload timer fired: the ``upload`` replies."""
    return [r for r in host(session, "sync_upload") if r["type"] == "upload"]


def sent(upload: dict, session: WorkerSession, status: int = 200) -> dict:
    """The host POSTed ``upload`` and the server answered ``status``; its body."""
    host(session, "sync_result", batch_id=upload["batch_id"], status=status)
    return json.loads(upload["body"])


def slot_prior(session: WorkerSession, slot: str) -> dict | None:
    """The engine's installed priors of ``slot`` (level -> its state), None for no slot state."""
    slots = session.engine.state()["slots"]
    return slots[slot]["priors"] if slot in slots else None


# --- priors down ---------------------------------------------------------------------------


def test_init_loads_the_fetched_priors_and_says_which_version():
    session, replies = started()
    [synced] = [r for r in replies if r["type"] == "synced"]
    assert synced["priors_version"] == 3 and synced["uploaded"] == 0
    assert slot_prior(session, "cta") is None  # nothing installed before a decision


def test_priors_are_installed_only_for_the_slots_on_the_page_before_their_first_decision():
    session, _ = started()
    decide(session, CTA)
    cta = slot_prior(session, "cta")
    assert set(cta) == {"site", "segment"}  # the site's model and the visitor's cell
    quiz, discount = cta["segment"]["actions"]["quiz"], cta["segment"]["actions"]["discount"]
    assert quiz[2] / (quiz[2] + quiz[3]) > discount[2] / (discount[2] + discount[3])
    assert slot_prior(session, "hero") is None  # the document has it, the page does not
    assert session.sync.to_state()["installed"] == {"cta": [3, MOBILE_CELL]}
    decide(session, HERO)  # a slot that appears later gets its priors then
    assert set(slot_prior(session, "hero")) == {"site"}  # no cell counts for it


def test_a_new_page_view_installs_the_cell_of_its_context():
    session, _ = started()
    decide(session, CTA)
    page(session, "page", context={"device": "desktop"})
    decide(session, CTA)
    assert session.sync.to_state()["installed"] == {"cta": [3, "device=desktop"]}
    cta = slot_prior(session, "cta")["segment"]["actions"]
    assert cta["discount"][2] > cta["quiz"][2]


def test_a_malformed_priors_document_is_reported_and_the_engine_decides_without_it():
    broken = {**priors(), "v": 1}
    session, replies = started(broken)
    [error] = [r for r in replies if r["type"] == "error"]
    assert "sync priors ignored" in error["message"] and "version" in error["message"]
    assert decide(session, CTA)["cta"]["variant"] in CTA["variants"]
    assert slot_prior(session, "cta") == {}


# --- bounded counts up -----------------------------------------------------------------------


def test_a_visitor_with_a_single_seen_decision_uploads_it_when_the_page_is_hidden():
    """Issue 13: one decision, seen, no click, then the visitor leaves."""
    session, _ = started()
    variant = decide(session, CTA)["cta"]["variant"]
    applied(session, "cta")
    seen(session, "cta")
    [upload] = hidden(session)
    assert upload["url"] == "https://sync.example/v1/sites/shop/uploads" and upload["key"] == KEY
    body = json.loads(upload["body"])
    assert body == {
        "v": 2,
        "batch_id": upload["batch_id"],
        "privacy": {"mode": "aggregate"},
        "slots": {
            "cta": {
                "cell": MOBILE_CELL,
                "variants": {variant: {"shown": 1, "reward": 0}},
                "holdout": {"shown": 0, "reward": 0},
            }
        },
    }


def test_an_unseen_decision_is_not_counted_even_when_clicked():
    session, _ = started()
    decide(session, CTA, HERO)
    applied(session, "cta")
    applied(session, "hero")
    page(session, "reward", goal="buy", value=1.0, slot="cta")  # the engine learns it
    assert session.engine.state()["slots"]["cta"]["noise"][0] == 1
    assert hidden(session) == []  # the sync server does not: the exposure rule was not met
    seen(session, "hero")
    [upload] = hidden(session)
    assert set(json.loads(upload["body"])["slots"]) == {"hero"}


def test_an_impression_reported_twice_counts_once():
    session, _ = started()
    decide(session, CTA)
    applied(session, "cta")
    seen(session, "cta")
    seen(session, "cta")
    [upload] = hidden(session)
    counts = json.loads(upload["body"])["slots"]["cta"]["variants"]
    assert sum(c["shown"] for c in counts.values()) == 1


def test_a_reward_after_the_upload_goes_into_the_next_body():
    session, _ = started()
    variant = decide(session, CTA)["cta"]["variant"]
    applied(session, "cta")
    seen(session, "cta")
    first = sent(hidden(session)[0], session)
    assert first["slots"]["cta"]["variants"] == {variant: {"shown": 1, "reward": 0}}
    [rewarded] = page(session, "reward", goal="buy", value=1.0, slot="cta")[:1]
    assert rewarded["type"] == "rewarded"
    [upload] = timer(session)
    second = sent(upload, session)
    assert second["batch_id"] != first["batch_id"]
    assert second["slots"]["cta"]["variants"] == {variant: {"shown": 0, "reward": 1}}
    assert session.sync.to_state()["uploaded"] == 2


def test_a_goal_from_javascript_rewards_the_seen_decisions_in_the_upload():
    session, _ = started()
    picked = decide(session, CTA, HERO)
    for slot in ("cta", "hero"):
        applied(session, slot)
    seen(session, "hero")
    page(session, "reward", goal="signup", value=1.0)
    [upload] = hidden(session)
    body = json.loads(upload["body"])
    assert set(body["slots"]) == {"hero"}
    assert body["slots"]["hero"]["variants"] == {
        picked["hero"]["variant"]: {"shown": 1, "reward": 1}
    }


def test_a_window_closed_without_a_reward_adds_no_zero_and_closes_the_decision(monkeypatch):
    import microadjust.browser.session as session_module

    clock = [1_000_000.0]
    monkeypatch.setattr(session_module.time, "time", lambda: clock[0])
    session, _ = started()
    decide(session, CTA)
    applied(session, "cta")
    seen(session, "cta")
    [_] = [sent(u, session) for u in hidden(session)]
    [event_id] = session.sync.to_state()["open"]
    clock[0] += session.engine.params["attribution_window_s"] + 1
    events(session, {"kind": "scroll", "t": 9000, "depth": 0.5})  # the worker closes windows
    assert session.sync.to_state()["open"] == {}  # closed: a later reward cannot reach it
    assert hidden(session) == []  # and the 0 is the absence of a reward, never sent
    assert event_id not in session.attribution.open


def test_a_ranking_counts_its_top_item_as_the_slots_exposure():
    session, _ = started()
    order = decide(session, CARDS)["cards"]["order"]
    applied(session, "cards")
    seen(session, "cards")
    page(session, "reward", goal="buy", value=1.0, slot="cards", item=order[0])
    [upload] = hidden(session)
    counts = json.loads(upload["body"])["slots"]["cards"]["variants"]
    assert counts == {order[0]: {"shown": 1, "reward": 1}}


def test_holdout_decisions_are_counted_as_the_holdout():
    session, _ = started(holdout=0.99)  # (the engine holds out at most this share)
    d = decide(session, CTA)["cta"]
    assert d["reason"].startswith("holdout"), d
    applied(session, "cta")
    seen(session, "cta")
    [upload] = hidden(session)
    cta = json.loads(upload["body"])["slots"]["cta"]
    assert cta["variants"] == {} and cta["holdout"] == {"shown": 1, "reward": 0}


@pytest.mark.parametrize(
    ("init", "consent"),
    [({"gpc": True}, None), ({"persist": False}, None), ({}, False)],
    ids=["gpc", "no consent at init", "consent withdrawn"],
)
def test_nothing_is_counted_or_offered_under_gpc_or_without_consent(init, consent):
    session, _ = started(**init)
    if consent is not None:
        page(session, "consent", granted=consent)
    decide(session, CTA)
    applied(session, "cta")
    seen(session, "cta")
    assert hidden(session) == [] and timer(session) == []
    assert session.sync.to_state()["unsent"] == {}


def test_a_batch_is_saved_before_it_is_sent_and_retried_with_the_same_bytes():
    session, _ = started()
    decide(session, CTA)
    applied(session, "cta")
    seen(session, "cta")
    host(session, "checkpoint")
    *ahead, upload, unsaved = events(session, {"kind": "hidden", "t": 500})
    assert [r["type"] for r in ahead] == ["save", "ahead"]  # the next view's, stored first
    assert upload["type"] == "upload" and unsaved["type"] == "unsaved"  # the new batch is kept
    [save] = host(session, "checkpoint")  # what the host stores before it sends
    assert save["state"]["sync"]["pending"]["batch_id"] == upload["batch_id"]
    assert host(session, "sync_result", batch_id=upload["batch_id"], status=0) == []  # offline
    [again] = timer(session)  # the same bytes again
    assert again["body"] == upload["body"]
    [synced, _] = host(session, "sync_result", batch_id=upload["batch_id"], status=201)
    assert synced["type"] == "synced" and synced["uploaded"] == 1
    assert hidden(session) == []  # nothing new to send


def test_forget_drops_what_is_unsent_and_reinstalls_the_priors_in_the_fresh_engine():
    session, _ = started()
    decide(session, CTA)
    applied(session, "cta")
    seen(session, "cta")
    page(session, "forget", id=1)
    assert session.sync.to_state()["unsent"] == {} and hidden(session) == []
    decide(session, CTA)
    assert set(slot_prior(session, "cta")) == {"site", "segment"}


# --- the real server takes the bodies and publishes what they say ----------------------------


@pytest.fixture
def server(tmp_path):
    shop = SiteDeclaration(key=KEY, slots={"cta": CTA["variants"]}, cells=CELLS)
    settings = SyncSettings(
        sites={"shop": shop},
        admin_token=ADMIN,
        data_dir=tmp_path,
        publish_interval_s=0.0,
        bucket_cap=float("inf"),
        rho_per_release=1e6,  # noise ~0.01: the counts can be checked exactly
    )
    with TestClient(create_app(settings, rng=np.random.default_rng(0))) as client:
        yield client


def test_the_server_takes_the_sessions_bodies_and_the_next_visitor_starts_from_them(server):
    def visit(seed: int, clicks: str) -> None:
        """A mobile visitor shown a variant at random, who clicks only ``clicks``."""
        document = server.get("/v1/sites/shop/priors").json()
        session, _ = started(document, MOBILE, sync={"url": ""}, seed=seed, **RANDOM)
        variant = decide(session, CTA)["cta"]["variant"]
        applied(session, "cta")
        seen(session, "cta")
        if variant == clicks:
            page(session, "reward", goal="buy", value=1.0, slot="cta")
        for upload in hidden(session):
            assert upload["url"] == "/v1/sites/shop/uploads"
            response = server.post(
                upload["url"],
                content=upload["body"],
                headers={"X-Microadjust-Key": KEY, "Content-Type": "application/json"},
            )
            assert response.status_code == 200 and response.json()["refused"] == {}, response.text
            sent(upload, session, response.status_code)

    for seed in range(24):  # mobile visitors click only the quiz
        visit(seed, clicks="quiz")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert server.post("/v1/admin/sites/shop/publish", headers=auth).status_code == 200
    document = server.get("/v1/sites/shop/priors").json()
    mobile = document["slots"]["cta"]["cells"][MOBILE_CELL]
    assert sum(v["shown"] for v in mobile.values()) == pytest.approx(24, abs=0.1)
    assert mobile["quiz"]["reward"] == pytest.approx(mobile["quiz"]["shown"], abs=0.1)
    session, _ = started(document)  # a fresh mobile visitor
    assert decide(session, CTA)["cta"]["variant"] == "quiz"
    segment = slot_prior(session, "cta")["segment"]["actions"]
    rate = {v: s / (s + f) for v, (_, _, s, f) in segment.items()}
    assert max(rate, key=rate.get) == "quiz"
