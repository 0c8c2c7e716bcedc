"""The sync API in-process (protocol v2): declared sites, bounded uploads counted once, priors
served like static files, admin controls, recovery and the report."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # starlette suggests httpx2, which is not needed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from microadjust.browser.privacy import local_range
from microadjust.server.api import create_app
from microadjust.server.config import SyncSettings, load_sites, parse_site_option
from microadjust.server.models import SiteDeclaration

KEY = "upload-key-123"
ADMIN = "admin-token-0123456789"
SHOP = SiteDeclaration(
    key=KEY,
    slots={"cta": ["default", "quiz", "deal"], "headline": ["default", "story"]},
    cells={"device": ["desktop", "mobile"]},
)
EXACT = {"rho_per_release": 1e6}  # noise ~0.006 per increment: counts check exactly
MAX_SHOWN = 4  # the counts below are written for this bound (the default, 2: test_sync_publication)


def batch() -> str:
    return uuid.uuid4().hex


def make_upload(
    batch_id: str | None = None,
    *,
    slot: str = "cta",
    cell: str = "device=mobile",
    variant: str = "quiz",
    shown: float = 1,
    reward: float = 1,
    **changes,
) -> dict:
    """A valid v2 upload: one exposure of ``variant`` and ``reward`` units in one slot."""
    body = {
        "v": 2,
        "batch_id": batch_id or batch(),
        "privacy": {"mode": "aggregate"},
        "slots": {
            slot: {
                "cell": cell,
                "variants": {variant: {"shown": shown, "reward": reward}},
                "holdout": {"shown": 0, "reward": 0},
            }
        },
    }
    body.update(changes)
    return body


def settings(tmp_path: Path, **changes) -> SyncSettings:
    values = {
        "sites": {"shop": SHOP},
        "admin_token": ADMIN,
        "data_dir": tmp_path,
        "publish_interval_s": 0.0,
        "origins": ("https://shop.example",),
        "bucket_cap": float("inf"),
        "max_shown": MAX_SHOWN,
        **EXACT,
        **changes,
    }
    return SyncSettings(**values)


@pytest.fixture
def api(tmp_path):
    with TestClient(create_app(settings(tmp_path), rng=np.random.default_rng(0))) as client:
        yield client


def post(client, body, key=KEY, site="shop", **kwargs):
    return client.post(
        f"/v1/sites/{site}/uploads", json=body, headers={"X-Microadjust-Key": key}, **kwargs
    )


def raw_post(client, content: bytes, site="shop"):
    headers = {"X-Microadjust-Key": KEY, "Content-Type": "application/json"}
    return client.post(f"/v1/sites/{site}/uploads", content=content, headers=headers)


def admin(client, method, path, **kwargs):
    return client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs)


def priors(client, **headers):
    return client.get("/v1/sites/shop/priors", headers=headers)


def test_health_and_a_generated_openapi_document(api):
    health = api.get("/v1/health").json()
    assert health["status"] == "ok" and health["storage"] == "sqlite"
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/health", "/v1/sites/{site}/priors", "/v1/sites/{site}/uploads", "/report"} <= set(
        spec["paths"]
    )
    upload = spec["components"]["schemas"]["Upload"]
    assert set(upload["properties"]) == {"v", "batch_id", "privacy", "slots"}
    assert upload["additionalProperties"] is False


def test_priors_before_any_upload_carry_the_upload_rules_and_are_cacheable(api):
    response = priors(api)
    body = response.json()
    assert response.status_code == 200
    assert body["v"] == 2 and body["version"] == 0 and body["slots"] == {}
    modes = ["aggregate", "local"]
    assert body["upload"] == {"max_shown": MAX_SHOWN, "period_s": 86400,
                              "default_mode": "aggregate", "modes": modes}  # fmt: skip
    assert body["cells"] == {"device": ["desktop", "mobile"]}
    cache = response.headers["cache-control"]
    assert cache.startswith("public") and "max-age=" in cache and "stale-while-revalidate=" in cache
    again = priors(api, **{"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]
    assert api.get("/v1/sites/nowhere/priors").status_code == 404


def test_an_upload_is_counted_once_and_published_per_cell(api):
    first = post(api, make_upload("a" * 32, shown=1, reward=1))
    assert first.status_code == 200
    assert first.json() == {"accepted": {"cta": "ok"}, "refused": {}, "duplicate": False}
    retry = post(api, make_upload("a" * 32, shown=1, reward=1))
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    for _ in range(3):
        post(api, make_upload(shown=1, reward=0))
    response = priors(api)
    body = response.json()
    assert body["version"] == 1 and set(body["slots"]) == {"cta", "headline"}
    cta = body["slots"]["cta"]
    assert cta["variants"] == ["default", "quiz", "deal"]
    assert cta["cells"]["*"]["quiz"]["shown"] == pytest.approx(4, abs=0.05)
    assert cta["cells"]["*"]["quiz"]["reward"] == pytest.approx(1, abs=0.05)
    assert cta["cells"]["device=mobile"]["quiz"]["shown"] == pytest.approx(4, abs=0.05)
    assert "device=desktop" not in cta["cells"]  # no data: below the publication threshold
    unchanged = priors(api, **{"If-None-Match": response.headers["etag"]})
    assert unchanged.status_code == 304


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_priors_are_compressed_once_per_version(api, encoding):
    post(api, make_upload())
    response = priors(api, **{"Accept-Encoding": encoding})
    assert response.headers["content-encoding"] == encoding
    assert response.json()["version"] == 1  # httpx decodes it
    assert "Accept-Encoding" in response.headers["vary"]


def test_published_counts_are_clamped_to_zero_reward_shown(tmp_path):
    noisy = settings(tmp_path, rho_per_release=0.05)
    with TestClient(create_app(noisy, rng=np.random.default_rng(1))) as client:
        post(client, make_upload())
        cells = priors(client).json()["slots"]["cta"]["cells"]
    for variants in cells.values():
        for counts in variants.values():
            assert 0 <= counts["reward"] <= counts["shown"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_id": "batch-0001"}, "batch_id"),
        ({"batch_id": "A" * 32}, "batch_id"),
        ({"v": 1}, "v"),
        ({"privacy": {"mode": "none"}}, "privacy.mode"),
        ({"privacy": {"mode": "local"}}, "privacy.epsilon"),
        ({"privacy": {"mode": "local", "epsilon": 50}}, "privacy.epsilon"),
        ({"privacy": {"mode": "aggregate", "epsilon": 1}}, "privacy.epsilon"),
        ({"slots": {}}, "slots"),
        ({"events": 20}, "events"),
        ({"schema": {"features": {"dim": 4096}}}, "schema"),
    ],
)
def test_invalid_uploads_get_a_422_naming_the_field(api, change, field):
    response = post(api, {**make_upload(), **change})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert field.split(".")[-1] in response.json()["error"]


@pytest.mark.parametrize(
    ("counts", "field"),
    [
        ({"shown": 5, "reward": 0}, "slots.cta.variants.quiz.shown"),
        ({"shown": -1, "reward": 0}, "slots.cta.variants.quiz.shown"),
        ({"shown": 1.5, "reward": 0}, "slots.cta.variants.quiz.shown"),
        ({"shown": 1, "reward": 4.5}, "slots.cta.variants.quiz.reward"),
        ({"shown": "1", "reward": 0}, "slots.cta.variants.quiz.shown"),
        ({"shown": 1, "reward": 0, "n": 1}, "slots.cta.variants.quiz.n"),
        ({"shown": 1e9, "reward": 1e9}, "slots.cta.variants.quiz.shown"),
    ],
)
def test_counts_beyond_one_visitor_get_a_422_and_nothing_is_stored(api, counts, field):
    body = make_upload()
    body["slots"]["cta"]["variants"]["quiz"] = counts
    response = post(api, body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    state = admin(api, "GET", "/v1/admin/sites/shop").json()
    assert state["uploads"] == 0


def test_a_slot_sums_to_at_most_max_shown(api):
    body = make_upload()
    body["slots"]["cta"]["variants"] = {"quiz": {"shown": MAX_SHOWN, "reward": 0},
                                        "deal": {"shown": 1, "reward": 0}}  # fmt: skip
    response = post(api, body)
    assert response.status_code == 422 and response.json()["field"] == "slots.cta"


def test_local_mode_accepts_noise_within_its_tolerance(api):
    body = make_upload(privacy={"mode": "local", "epsilon": 1.0}, shown=-12.5, reward=30.25)
    assert post(api, body).status_code == 200
    body = make_upload(privacy={"mode": "local", "epsilon": 1.0}, shown=400.0, reward=0)
    response = post(api, body)
    assert response.status_code == 422 and response.json()["field"].endswith("quiz.shown")


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
def test_local_mode_accepts_the_devices_whole_range_and_nothing_beyond(api, epsilon):
    """The device's noise lies in the protocol's [-T, max_shown + T] (privacy.local_range)."""
    low, high = local_range(epsilon, MAX_SHOWN)
    local = {"mode": "local", "epsilon": epsilon}
    assert post(api, make_upload(privacy=local, shown=low, reward=high)).status_code == 200
    for shown, reward, field in ((low - 0.01, 0.0, "shown"), (0.0, high + 0.01, "reward")):
        response = post(api, make_upload(privacy=local, shown=shown, reward=reward))
        assert response.status_code == 422
        assert response.json()["field"] == f"slots.cta.variants.quiz.{field}"


def test_a_loud_local_upload_weighs_at_most_one_visitor(api):
    """Local-mode noise may reach 6 sigma per number: such an upload is scaled to one visitor."""
    loud = make_upload(privacy={"mode": "local", "epsilon": 0.1}, variant="deal", shown=1600.0,
                       reward=1600.0)  # fmt: skip
    assert post(api, loud).json()["accepted"] == {"cta": "ok"}
    deal = priors(api).json()["slots"]["cta"]["cells"]["*"]["deal"]
    assert deal["shown"] == pytest.approx(4, abs=0.05)  # the most one visitor can show
    assert deal["reward"] == pytest.approx(deal["shown"], abs=0.05)


def test_local_mode_counts_are_published_with_all_their_noise(tmp_path):
    """A cell holding local-mode uploads states its own sigma (the devices' noise and the
    central one), growing as the root of its uploads; exact uploads' cells keep the header's."""
    with TestClient(create_app(settings(tmp_path), rng=np.random.default_rng(1))) as client:
        local = {"mode": "local", "epsilon": 1.0}
        assert post(client, make_upload(cell="device=desktop")).json()["accepted"] == {"cta": "ok"}
        sigmas = []
        for uploads in (1, 4, 16):
            while admin(client, "GET", "/v1/admin/sites/shop").json()["uploads"] < 1 + uploads:
                assert post(client, make_upload(privacy=local, shown=-3.0)).status_code == 200
            admin(client, "POST", "/v1/admin/sites/shop/publish")
            document = priors(client).json()
            cells, central = document["slots"]["cta"]["cells"], document["privacy"]["sigma"]
            assert all("sigma" not in e for e in cells["device=desktop"].values())
            mobile = {e["sigma"] for e in cells["*"].values()}
            assert len(mobile) == 1 and mobile.pop() > central
            sigmas.append(cells["*"]["quiz"]["sigma"])
        assert sigmas[1] / sigmas[0] == pytest.approx(2.0, rel=0.01)
        assert sigmas[2] / sigmas[1] == pytest.approx(2.0, rel=0.01)


def test_a_server_restarted_with_a_lower_bound_releases_nothing_above_it(tmp_path):
    """Uploads stored under max_shown 4 and not yet released are scaled to one visitor under
    2 when the server restarts with 2, whose release noise is calibrated for 2."""
    with TestClient(create_app(settings(tmp_path), rng=np.random.default_rng(0))) as client:
        full = make_upload(shown=4, reward=4)  # norm 8 with its * cell: one visitor under 4
        assert post(client, full).json()["accepted"] == {"cta": "ok"}
    lower = settings(tmp_path, max_shown=2)
    with TestClient(create_app(lower, rng=np.random.default_rng(0))) as client:
        quiz = priors(client).json()["slots"]["cta"]["cells"]["*"]["quiz"]
    assert quiz["shown"] == pytest.approx(2.0, abs=0.05)  # norm 4: one visitor under 2


def test_undeclared_slots_variants_and_cells_are_refused_and_the_rest_kept(api):
    body = make_upload()
    body["slots"]["fake"] = {"cell": "device=mobile", "variants": {"x": {"shown": 1}}}
    body["slots"]["headline"] = {"cell": "device=mobile", "variants": {"clickbait": {"shown": 1}}}
    response = post(api, body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == {"cta": "ok"}
    assert set(answer["refused"]) == {"fake", "headline"}
    assert "not declared" in answer["refused"]["fake"]
    assert "clickbait" in answer["refused"]["headline"]
    tv = post(api, make_upload(cell="device=tv")).json()
    assert tv["accepted"] == {} and "device=tv" in tv["refused"]["cta"]
    assert post(api, make_upload(cell="device=other")).json()["accepted"] == {"cta": "ok"}
    published = priors(api).json()
    assert set(published["slots"]) == {"cta", "headline"}
    assert admin(api, "GET", "/v1/admin/sites/shop").json()["uploads"] == 2


def test_upload_security_and_transport_errors(api):
    assert post(api, make_upload(), key="wrong").status_code == 401
    assert post(api, make_upload(), site="nowhere").status_code == 404
    not_json = raw_post(api, b"{nope")
    assert not_json.status_code == 400 and not_json.json()["field"] == "body"
    text = api.post("/v1/sites/shop/uploads", content=b"{}",
                    headers={"X-Microadjust-Key": KEY, "Content-Type": "text/plain"})  # fmt: skip
    assert text.status_code == 415
    huge = raw_post(api, b" " * (16 * 1024 + 1))
    assert huge.status_code == 413 and huge.json()["field"] == "body"
    method = api.get("/v1/sites/shop/uploads")
    assert method.status_code == 405 and set(method.json()) == {"error", "field"}


def test_rate_limits_per_client(tmp_path):
    with TestClient(create_app(settings(tmp_path, rate_per_s=0.001, rate_burst=3))) as client:
        codes = [client.get("/v1/sites/shop/priors").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_cors_only_for_configured_origins(api):
    allowed = api.options(
        "/v1/sites/shop/uploads",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-microadjust-key",
        },
    )
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    other = api.get("/v1/sites/shop/priors", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_admin_needs_its_token(api):
    assert api.post("/v1/admin/sites/shop/publish").status_code == 401
    wrong = api.post("/v1/admin/sites/shop/publish", headers={"Authorization": "Bearer " + KEY})
    assert wrong.status_code == 401
    assert api.put("/v1/admin/sites/shop", json=SHOP.model_dump()).status_code == 401
    assert api.get("/report").status_code == 401
    assert api.get("/report").headers["www-authenticate"].startswith("Basic")
    assert admin(api, "POST", "/v1/admin/sites/nowhere/publish").status_code == 404


def test_sites_are_declared_through_the_admin_api(api):
    assert post(api, make_upload(), site="blog").status_code == 404
    declaration = {"key": "blog-key-123", "slots": {"hero": ["default", "calm"]}, "cells": {}}
    put = admin(api, "PUT", "/v1/admin/sites/blog", json=declaration)
    assert put.status_code == 200
    got = admin(api, "GET", "/v1/admin/sites/blog").json()
    assert got["declaration"] == declaration and got["uploads"] == 0
    body = make_upload(slot="hero", cell="*", variant="calm")
    assert post(api, body, key="blog-key-123", site="blog").json()["accepted"] == {"hero": "ok"}
    published = api.get("/v1/sites/blog/priors").json()
    assert published["cells"] == {} and set(published["slots"]["hero"]["cells"]) == {"*"}
    bad = admin(api, "PUT", "/v1/admin/sites/blog", json={**declaration, "key": "short"})
    assert bad.status_code == 422 and bad.json()["field"] == "key"
    too_many = {"a": ["1", "2", "3", "4", "5", "6", "7"], "b": ["1", "2", "3", "4", "5", "6", "7"],
                "c": ["1", "2", "3", "4", "5", "6", "7"]}  # fmt: skip
    bad = admin(api, "PUT", "/v1/admin/sites/blog", json={**declaration, "cells": too_many})
    assert bad.status_code == 422 and "256" in bad.json()["error"]
    assert admin(api, "GET", "/v1/admin/sites/blog").json()["declaration"] == declaration


def test_the_sites_file_and_the_legacy_site_option(tmp_path):
    path = tmp_path / "sites.json"
    path.write_text(json.dumps({"shop": SHOP.model_dump()}))
    assert load_sites(path) == {"shop": SHOP}
    path.write_text(json.dumps({"shop": {**SHOP.model_dump(), "slots": {"cta": []}}}))
    with pytest.raises(ValueError, match=r"shop\.slots\.cta"):
        load_sites(path)
    name, declaration = parse_site_option("blog=key-12345678")
    assert name == "blog" and declaration.slots == {} and declaration.key == "key-12345678"
    with pytest.raises(ValueError, match="NAME=KEY"):
        parse_site_option("blog=short")


def test_admin_can_publish_freeze_and_roll_back_and_rollback_survives_unfreezing(api):
    post(api, make_upload(shown=1, reward=0))
    assert priors(api).json()["version"] == 1
    assert admin(api, "POST", "/v1/admin/sites/shop/freeze").json()["frozen"] is True
    forged = [make_upload(variant="deal", shown=4, reward=4) for _ in range(20)]
    for body in forged:
        post(api, body)
    assert priors(api).json()["version"] == 1  # frozen: no automatic publication
    assert admin(api, "POST", "/v1/admin/sites/shop/publish").json()["version"] == 2
    assert priors(api).json()["slots"]["cta"]["cells"]["*"]["deal"]["shown"] == pytest.approx(
        80, abs=0.1
    )
    rollback = admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"version": 1})
    assert rollback.json() == {"site": "shop", "version": 1, "frozen": True, "purged_uploads": 20}
    assert priors(api).json()["version"] == 1
    bad = admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"version": 99})
    assert bad.status_code == 422 and bad.json()["field"] == "version"
    assert admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"v": 1}).status_code == 422
    admin(api, "POST", "/v1/admin/sites/shop/unfreeze")
    assert priors(api).json()["version"] == 1  # unfreezing alone republishes nothing
    post(api, make_upload(shown=1, reward=0))
    again = priors(api).json()
    assert again["version"] == 3
    assert again["slots"]["cta"]["cells"]["*"]["deal"]["shown"] == pytest.approx(0, abs=0.1)
    state = admin(api, "GET", "/v1/admin/sites/shop").json()
    assert state["uploads"] == 2 and [v["version"] for v in state["versions"]] == [1, 2, 3]


def test_admin_lists_and_purges_uploads_by_time_and_batch_id(tmp_path):
    clock = iter(range(1_000_000, 2_000_000, 10)).__next__
    app = create_app(settings(tmp_path), clock=lambda: float(clock()))
    with TestClient(app) as client:
        ids = [batch() for _ in range(6)]
        for batch_id in ids:
            post(client, make_upload(batch_id, variant="deal", shown=4, reward=4))
        listed = admin(client, "GET", "/v1/admin/sites/shop/uploads?limit=3").json()["uploads"]
        assert [u["batch_id"] for u in listed] == ids[:3]
        assert listed[0]["slots"] == ["cta"] and 0 <= listed[0]["bucket"] < 4096
        middle = listed[1]["received_at"]
        purge = admin(client, "POST", "/v1/admin/sites/shop/uploads/purge",
                      json={"since": middle, "until": middle + 1})  # fmt: skip
        assert purge.json()["purged_uploads"] == 1
        purge = admin(client, "POST", "/v1/admin/sites/shop/uploads/purge",
                      json={"batch_ids": ids[3:]})  # fmt: skip
        assert purge.json()["purged_uploads"] == 3
        empty = admin(client, "POST", "/v1/admin/sites/shop/uploads/purge", json={})
        assert empty.status_code == 422
        assert admin(client, "POST", "/v1/admin/sites/shop/rebuild").json()["uploads"] == 2
        deal = priors(client).json()["slots"]["cta"]["cells"]["*"]["deal"]
        assert deal["shown"] == pytest.approx(8, abs=0.1)


def test_a_purge_re_releases_only_the_increment_it_touched(tmp_path):
    """After a purge the published sums lose the purged upload; the untouched increment keeps
    the noise it was released with; a refused purge changes nothing."""
    now = [1_000_000.0]
    app = create_app(settings(tmp_path, rho_per_release=1.0), clock=lambda: now[0],
                     rng=np.random.default_rng(4))  # fmt: skip
    with TestClient(app) as client:
        store = app.state.storage
        first, second = batch(), batch()
        post(client, make_upload(first, variant="deal", shown=4, reward=4))
        priors(client)  # released: increment 1
        now[0] += 100
        post(client, make_upload(second, variant="quiz", shown=4, reward=0))
        priors(client)  # released: increment 2
        kept = store.increments("shop")
        assert [i.seq for i in kept] == [1, 2]
        bad = admin(client, "POST", "/v1/admin/sites/shop/uploads/purge",
                    json={"batch_ids": "not a list"})  # fmt: skip
        assert bad.status_code == 422 and store.increments("shop") == kept
        assert store.upload_count("shop") == 2
        purged = admin(client, "POST", "/v1/admin/sites/shop/uploads/purge",
                       json={"batch_ids": [first]})  # fmt: skip
        assert purged.json()["purged_uploads"] == 1
        assert [i.counts is None for i in store.increments("shop")] == [True, False]
        assert admin(client, "POST", "/v1/admin/sites/shop/publish").status_code == 200
        after = store.increments("shop")
    assert [i.seq for i in after] == [2] and after[0] == kept[1]  # dropped; the other as released


def test_privacy_settings_out_of_range_are_refused_clearly(tmp_path):
    for name, value in (("rho_per_release", 0.0), ("rho_per_release", float("nan")),
                        ("half_life_days", -1.0)):  # fmt: skip
        with pytest.raises(ValueError, match=f"{name} must be > 0"):
            settings(tmp_path, **{name: value})


def test_the_report_has_rates_per_cell_and_lift_against_the_holdout(api):
    for _ in range(30):
        body = make_upload(shown=2, reward=1)
        body["slots"]["cta"]["holdout"] = {"shown": 1, "reward": 0}
        post(api, body)
    for _ in range(10):
        post(api, make_upload(cell="device=desktop", variant="deal", shown=1, reward=0))
    report = admin(api, "GET", "/v1/admin/sites/shop/report").json()
    assert report["uploads"] == 40
    cta = report["slots"]["cta"]["cells"]
    assert set(cta) == {"*", "device=mobile", "device=desktop"}
    assert cta["device=mobile"]["variants"]["quiz"]["rate"] == pytest.approx(0.5)
    assert cta["*"]["variants"]["quiz"]["n"] == pytest.approx(60)
    assert cta["*"]["variants"]["deal"]["rate"] == pytest.approx(0.0)
    lift = cta["device=mobile"]["lift"]
    assert lift["value"] == pytest.approx(0.5) and lift["low"] < 0.5 < lift["high"]
    page = api.get("/report", auth=("admin", ADMIN))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<svg") == 2 and "quiz" in page.text and "holdout" in page.text
    assert "<td>story</td><td>0</td><td>–</td><td>–</td>" in page.text  # no data: one dash
    assert api.get("/report?site=nowhere", auth=("admin", ADMIN)).status_code == 404


def test_decay_halves_old_contributions(tmp_path):
    day = 86400.0
    now = [day]
    app = create_app(settings(tmp_path, half_life_days=10.0), clock=lambda: now[0])
    with TestClient(app) as client:
        for _ in range(25):
            post(client, make_upload(shown=4, reward=0))
        priors(client)  # released on day 1: an increment decays from its release
        now[0] = 11 * day
        for _ in range(25):
            post(client, make_upload(shown=4, reward=0))
        quiz = priors(client).json()["slots"]["cta"]["cells"]["*"]["quiz"]
    assert quiz["shown"] == pytest.approx(150.0, abs=0.1)


def test_migrations_are_versioned_and_idempotent(tmp_path):
    from microadjust.server.migrations import LATEST
    from microadjust.server.storage import Storage

    store = Storage(data_dir=tmp_path)
    assert store.migrate() == LATEST
    assert store.migrate() == LATEST
    with store._transaction() as run:
        rows = run("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))
    assert store.site_state("shop").current_version is None


def test_the_report_axis_fits_small_click_rates():
    from microadjust.server.report import _chart

    small = _chart([("quiz", {"rate": 0.05, "low": 0.02, "high": 0.08}, "#36c")])
    assert ">10%</text>" in small and ">100%</text>" not in small
    wide = _chart([("quiz", {"rate": 0.5, "low": 0.3, "high": 0.7}, "#36c")])
    assert ">100%</text>" in wide
    empty = _chart([("quiz", {"n": 0.0, "rate": None, "low": None, "high": None}, "#36c")])
    assert ">100%</text>" in empty and "no data" in empty  # not an axis of 1% for nothing
