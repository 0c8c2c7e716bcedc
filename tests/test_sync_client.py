"""The worker's sync logic on CPython: config, consent and GPC, batches, retries, priors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from visitors import VARIANTS, visitor

from microadjust import Engine
from microadjust.browser.privacy import gaussian_sigma
from microadjust.browser.session import WorkerSession
from microadjust.browser.sync_client import SyncClient
from microadjust.core.errors import InvalidParameter
from microadjust.server.aggregate import merge, prior_stats


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """64 x 64 inversions are far slower with BLAS threads fighting over two cores."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        yield


SYNC = {"url": "https://sync.example", "site": "shop", "key": "k" * 12, "upload": True}


def client(**overrides) -> SyncClient:
    sync = SyncClient()
    kwargs = {"gpc": False, "consent": True, **overrides}
    sync.configure({**SYNC, **kwargs.pop("config", {})}, **kwargs)
    return sync


@pytest.mark.parametrize(
    ("field", "value"),
    [("site", ""), ("upload", "yes"), ("epsilon", 3.0), ("min_events", 0), ("colour", 1)],
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
def test_no_upload_without_consent_with_gpc_or_when_the_site_disables_it(overrides, reason):
    sync = client(**overrides)
    assert sync.upload_blocked() == reason
    assert sync.next_upload(visitor(0)) is None


def test_no_upload_below_the_minimum_number_of_events():
    sync = client(config={"min_events": 20})
    assert sync.next_upload(visitor(0, decisions=19)) is None
    assert sync.next_upload(visitor(0, decisions=20))["events"] == 20


def test_the_server_minimum_wins_when_it_is_higher():
    sync = client()
    sync.apply_priors(Engine(), {"version": 0, "slots": {}, "upload": {"min_events": 40}})
    assert sync.next_upload(visitor(0, decisions=30)) is None


def test_an_upload_holds_only_noisy_aggregates():
    engine = visitor(3)
    body = client().next_upload(engine, rng=np.random.default_rng(0))
    assert set(body) == {"v", "batch_id", "events", "schema", "privacy", "slots"}
    assert body["events"] == 30 and body["schema"] == engine.schema()
    assert body["privacy"]["sigma"] == pytest.approx(gaussian_sigma(1.0))
    cta = body["slots"]["cta"]
    assert set(cta) == {"actions", "holdout", "ope"}
    assert set(cta["actions"]) == set(VARIANTS)
    text = json.dumps(body)
    assert "device" not in text and "mobile" not in text and "hour" not in text
    total = sum(a["n"] for a in cta["actions"].values())
    assert total != 30.0  # noise, not the exact count


def test_a_batch_is_resent_unchanged_until_acknowledged_and_never_rebuilt():
    engine = visitor(4)
    sync = client()
    first = sync.next_upload(engine)
    again = sync.next_upload(engine)
    assert again is first and again["batch_id"] == first["batch_id"]
    assert sync.acknowledged("someone-else") is False
    assert sync.acknowledged(first["batch_id"]) is True and sync.uploaded == 1
    assert sync.next_upload(engine) is None  # those decisions were uploaded once, that's all
    for i in range(25):  # new decisions make a new batch
        d = engine.rank({"device": "mobile"}, VARIANTS, slot="cta", now=100.0 + i)
        engine.reward(d.event_id, 1.0, now=100.5 + i)
    second = sync.next_upload(engine)
    assert second["batch_id"] != first["batch_id"] and second["events"] == 25


def test_state_survives_a_reload_and_a_refused_batch_is_dropped():
    engine = visitor(5)
    sync = client()
    batch = sync.next_upload(engine)
    restored = SyncClient()
    restored.configure(SYNC, consent=True, saved=json.loads(json.dumps(sync.state())))
    assert restored.next_upload(engine)["batch_id"] == batch["batch_id"]
    assert restored.rejected(batch["batch_id"]) and restored.pending is None
    assert restored.next_upload(engine) is None


def test_withdrawing_consent_drops_the_unsent_batch():
    sync = client()
    assert sync.next_upload(visitor(6)) is not None
    sync.set_consent(False)
    assert sync.pending is None and sync.next_upload(visitor(6)) is None


def test_priors_from_the_server_become_the_engines_site_prior():
    sync = client()
    agg = merge(
        None,
        Engine().schema(),
        {
            "actions": {
                "quiz": {"n": 500.0, "reward_sum": 400.0},
                "default": {"n": 500.0, "reward_sum": 50.0},
            },  # fmt: skip
            "holdout": {"n": 0.0, "reward": 0.0},
            "ope": {"w": 0.0, "wr": 0.0},
        },
        1.0,
        10.0,
        1.0,
    )
    engine = Engine(seed=1)
    priors = {"version": 3, "slots": {"cta": prior_stats(agg, "cta", 1.0), "bad": {"x": 1}}}
    problems = sync.apply_priors(engine, priors)
    assert len(problems) == 1 and "'bad'" in problems[0]
    assert sync.priors_version == 3
    shown = [Engine(seed=seed) for seed in range(40)]
    for other in shown[:20]:
        sync.apply_priors(other, priors)
    chosen = [e.rank({"device": "mobile"}, ["default", "quiz"], slot="cta").action for e in shown]
    assert chosen.count("quiz") >= 15, chosen


def first_visit_hits(prior: dict | None, visits: int = 100) -> float:
    """Share of first decisions that show the variant the site's visitors prefer."""
    hits = 0
    for seed in range(visits):
        engine = Engine(seed=10_000 + seed)
        if prior is not None:
            SyncClient().apply_priors(engine, prior)
        d = engine.rank({"device": "mobile", "hour": seed % 24}, VARIANTS, slot="cta", now=0.0)
        hits += d.action == "quiz"
    return hits / visits


def test_noisy_uploads_of_sixty_visitors_make_first_visits_better():
    """The whole chain on CPython: simulate, noise, merge, publish, install, decide."""
    data = None
    for seed in range(60):
        body = client().next_upload(visitor(seed), rng=np.random.default_rng(seed))
        data = merge(data, body["schema"], body["slots"]["cta"], body["privacy"]["sigma"], 10, 1)
    prior = {"version": 1, "slots": {"cta": prior_stats(data, "cta", 1.0)}}
    without, with_prior = first_visit_hits(None), first_visit_hits(prior)
    assert without < 0.5 and with_prior > without + 0.25, (without, with_prior)


def test_the_worker_session_wires_sync_in():
    session = WorkerSession()
    agg = merge(
        None,
        Engine().schema(),
        {
            "actions": {"quiz": {"n": 100.0, "reward_sum": 90.0}},
            "holdout": {"n": 0.0, "reward": 0.0},
            "ope": {"w": 0.0, "wr": 0.0},
        },  # fmt: skip
        1.0,
        10.0,
        1.0,
    )
    replies = session.handle(
        {
            "v": 1,
            "type": "init",
            "config": {"seed": 1, "sync": {**SYNC, "min_events": 20}},
            "persist": True,
            "gpc": False,
            "priors": {"version": 7, "slots": {"cta": prior_stats(agg, "cta", 1.0)}},
        }
    )
    assert [r["type"] for r in replies] == ["ready", "synced", "plan", "unsaved"]
    assert replies[1]["priors_version"] == 7 and replies[2]["upload_interval_ms"] == 60_000
    [_] = host(session, "checkpoint")
    assert host(session, "sync_upload") == []  # nothing learned yet
    for i in range(20):
        d = session.engine.rank({"x": 1.0}, ["default", "quiz"], slot="cta", now=float(i))
        session.engine.reward(d.event_id, 1.0, now=i + 0.5)
    [upload, _] = host(session, "sync_upload")
    assert upload["url"] == "https://sync.example/v1/sites/shop/uploads"
    assert upload["key"] == SYNC["key"] and json.loads(upload["body"])["events"] == 20
    batch = upload["batch_id"]
    assert host(session, "sync_result", batch_id=batch, status=503) == [unsaved()]  # a retry
    assert host(session, "sync_upload")[0]["body"] == upload["body"]  # the same bytes
    [synced, _] = host(session, "sync_result", batch_id=batch, status=201)
    assert synced["type"] == "synced" and synced["uploaded"] == 1
    [save] = host(session, "checkpoint")
    assert save["state"]["sync"]["pending"] is None and save["state"]["sync"]["uploaded"] == 1
    assert host(session, "consent", granted=False) == [{"v": 1, "type": "erase"}]
    assert session.sync.client.upload_blocked() == "the visitor has not consented"


def test_the_worker_refuses_to_upload_when_gpc_is_on():
    session = WorkerSession()
    session.handle({"v": 1, "type": "init", "config": {"sync": SYNC}, "persist": True, "gpc": True})
    [_] = host(session, "checkpoint")
    for i in range(30):
        d = session.engine.rank({"x": 1.0}, ["default", "quiz"], slot="cta", now=float(i))
        session.engine.reward(d.event_id, 1.0, now=i + 0.5)
    hidden = {"v": 1, "type": "events", "events": [{"kind": "hidden", "t": 9}]}
    assert host(session, "sync_upload") == [] and session.handle(hidden) == []


def host(session: WorkerSession, kind: str, **fields) -> list[dict]:
    """A message of web/worker.js itself, and all the replies."""
    return session.handle({"v": 1, "type": kind, **fields}, from_host=True)


def unsaved() -> dict:
    return {"v": 1, "type": "unsaved"}
