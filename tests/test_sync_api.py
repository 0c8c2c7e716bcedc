"""The sync API in-process: priors with ETags, idempotent uploads, validation, security, admin."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2, which is not needed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from microadjust import Engine
from microadjust.browser.privacy import IPS_CLIP, gaussian_sigma
from microadjust.server.api import create_app
from microadjust.server.config import Site, SyncSettings

KEY = "upload-key-123"
ADMIN = "admin-token-0123456789"
SCHEMA = Engine().schema()


def make_upload(batch_id: str, n: float = 1.0, reward: float = 1.0, **changes) -> dict:
    """A valid upload adding ``n`` decisions (``reward`` of them rewarded) to slot cta / quiz."""
    body = {
        "v": 1,
        "batch_id": batch_id,
        "events": 20,
        "schema": SCHEMA,
        "privacy": {
            "mechanism": "gaussian",
            "epsilon": 1.0,
            "delta": 1e-5,
            "sigma": gaussian_sigma(1.0, 1e-5),
            "ips_clip": IPS_CLIP,
        },
        "slots": {
            "cta": {
                "actions": {
                    "quiz": {"n": n, "reward_sum": reward},
                    "default": {"n": n, "reward_sum": 0.0},
                },
                "holdout": {"n": 0.5 * n, "reward": 0.0},
                "ope": {"w": 0.1 * n, "wr": 0.05 * n},
            }
        },
    }
    body.update(changes)
    return body


def settings(tmp_path: Path, **changes) -> SyncSettings:
    values = {
        "sites": {"shop": Site("shop", KEY, min_events=20)},
        "admin_token": ADMIN,
        "data_dir": tmp_path,
        "publish_interval_s": 0.0,
        "origins": ("https://shop.example",),
        **changes,
    }
    return SyncSettings(**values)


@pytest.fixture
def api(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        yield client


def post(client, body, key=KEY, site="shop", **kwargs):
    return client.post(
        f"/v1/sites/{site}/uploads", json=body, headers={"X-Microadjust-Key": key}, **kwargs
    )


def admin(client, method, path, **kwargs):
    return client.request(method, path, headers={"Authorization": f"Bearer {ADMIN}"}, **kwargs)


def test_health_and_openapi(api):
    assert api.get("/v1/health").json() == {
        "status": "ok",
        "storage": "sqlite",
        "schema_version": 1,
    }
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/health", "/v1/sites/{site}/priors", "/v1/sites/{site}/uploads", "/report"} <= set(
        spec["paths"]
    )


def test_priors_before_any_upload_are_empty_but_cacheable(api):
    response = api.get("/v1/sites/shop/priors")
    assert response.status_code == 200
    assert response.json() == {
        "site": "shop",
        "version": 0,
        "published_at": None,
        "slots": {},
        "upload": {"min_events": 20},
    }
    assert "max-age" in response.headers["cache-control"]
    again = api.get("/v1/sites/shop/priors", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]
    assert api.get("/v1/sites/nowhere/priors").status_code == 404


def test_an_upload_is_merged_once_and_published_as_an_engine_prior(api):
    first = post(api, make_upload("batch-0001", n=40.0, reward=30.0))
    assert first.status_code == 201 and first.json() == {
        "batch_id": "batch-0001",
        "status": "stored",
    }
    retry = post(api, make_upload("batch-0001", n=40.0, reward=30.0))
    assert retry.status_code == 200 and retry.json()["status"] == "duplicate"
    priors = api.get("/v1/sites/shop/priors")
    body = priors.json()
    assert body["version"] == 1 and set(body["slots"]) == {"cta"}
    quiz = body["slots"]["cta"]["actions"]["quiz"]
    assert quiz["n"] == pytest.approx(40.0) and quiz["successes"] == pytest.approx(30.0)
    engine = Engine(seed=0)
    engine.set_prior("cta", body["slots"]["cta"])  # the engine accepts it as is
    assert priors.headers["etag"] != api.get("/v1/sites/nowhere/priors").headers.get("etag")
    unchanged = api.get("/v1/sites/shop/priors", headers={"If-None-Match": priors.headers["etag"]})
    assert unchanged.status_code == 304


def test_priors_are_gzipped_when_the_client_accepts_it(api):
    post(api, make_upload("batch-0002", n=40.0, reward=30.0))
    response = api.get("/v1/sites/shop/priors", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["version"] == 1  # httpx decodes it


def test_noisy_counts_are_clamped_into_a_valid_prior(api):
    post(api, make_upload("batch-0003", n=-5.0, reward=3.0))
    post(api, make_upload("batch-0004", n=8.0, reward=12.0, events=21))
    cta = api.get("/v1/sites/shop/priors").json()["slots"]["cta"]["actions"]
    assert cta["quiz"]["n"] == pytest.approx(3.0)
    assert cta["quiz"]["reward_sum"] == cta["quiz"]["n"]  # clamped: 0 <= reward_sum <= n
    Engine().set_prior("cta", api.get("/v1/sites/shop/priors").json()["slots"]["cta"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_id": "x"}, "batch_id"),
        ({"v": 2}, "v"),
        ({"events": 19}, "events"),
        ({"events": True}, "events"),
        ({"schema": {"format": "other", "version": 1, "features": {"dim": 8}}}, "schema.format"),
        ({"privacy": {"mechanism": "none"}}, "privacy.mechanism"),
        ({"privacy": "gaussian"}, "privacy"),
        ({"slots": {}}, "slots"),
        (
            {"slots": {"cta": {"actions": {"a": {"n": 1}}, "holdout": {}, "ope": {}}}},
            "slots.cta.actions.a.reward_sum",
        ),  # fmt: skip
        (
            {
                "slots": {
                    "cta": {
                        "actions": {"a": {"n": "1", "reward_sum": 0}},
                        "holdout": {"n": 0, "reward": 0},
                        "ope": {"w": 0, "wr": 0},
                    }
                }
            },
            "slots.cta.actions.a.n",
        ),  # fmt: skip
        (
            {
                "slots": {
                    "cta": {
                        "actions": {"a": {"n": 1e300, "reward_sum": 0}},
                        "holdout": {"n": 0, "reward": 0},
                        "ope": {"w": 0, "wr": 0},
                    }
                }
            },
            "slots.cta.actions.a.n",
        ),  # fmt: skip
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_uploads_get_a_422_naming_the_field(api, change, field):
    body = make_upload("batch-0005")
    if "privacy" in change and isinstance(change["privacy"], dict):
        change = {"privacy": {**body["privacy"], **change["privacy"]}}
    response = post(api, {**body, **change})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert field.split(".")[-1] in response.json()["error"]


def test_sigma_must_match_the_declared_epsilon(api):
    body = make_upload("batch-0006")
    body["privacy"]["sigma"] = 0.001
    response = post(api, body)
    assert response.status_code == 422 and response.json()["field"] == "privacy.sigma"


def test_upload_security_and_transport_errors(api):
    assert post(api, make_upload("batch-0007"), key="wrong").status_code == 401
    assert post(api, make_upload("batch-0007"), site="nowhere").status_code == 404
    not_json = api.post(
        "/v1/sites/shop/uploads",
        content=b"{nope",
        headers={"X-Microadjust-Key": KEY, "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["field"] == "body"
    text = api.post(
        "/v1/sites/shop/uploads",
        content=b"{}",
        headers={"X-Microadjust-Key": KEY, "Content-Type": "text/plain"},
    )
    assert text.status_code == 415
    huge = api.post(
        "/v1/sites/shop/uploads",
        content=b" " * (64 * 1024 + 1),
        headers={"X-Microadjust-Key": KEY, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert api.get("/v1/sites/shop/uploads").status_code == 405


def test_a_slot_cannot_change_feature_space(api):
    assert post(api, make_upload("batch-0008")).status_code == 201
    other = {**SCHEMA, "features": {**SCHEMA["features"], "dim": 8}}
    response = post(api, make_upload("batch-0009", schema=other))
    assert response.status_code == 409 and response.json()["field"] == "schema"
    assert post(api, make_upload("batch-0009")).status_code == 201  # nothing was stored


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
    assert api.get("/report").status_code == 401
    assert api.get("/report").headers["www-authenticate"].startswith("Basic")
    assert admin(api, "POST", "/v1/admin/sites/nowhere/publish").status_code == 404


def test_admin_can_publish_freeze_and_roll_back(api):
    post(api, make_upload("batch-0010", n=10.0, reward=5.0))
    assert api.get("/v1/sites/shop/priors").json()["version"] == 1
    assert admin(api, "POST", "/v1/admin/sites/shop/freeze").json()["frozen"] is True
    post(api, make_upload("batch-0011", n=10.0, reward=5.0))
    frozen = api.get("/v1/sites/shop/priors").json()
    assert frozen["version"] == 1  # frozen: no automatic publication
    assert admin(api, "POST", "/v1/admin/sites/shop/publish").json()["version"] == 2
    assert api.get("/v1/sites/shop/priors").json()["slots"]["cta"]["actions"]["quiz"][
        "n"
    ] == pytest.approx(20)
    rollback = admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"version": 1})
    assert rollback.json() == {"site": "shop", "version": 1, "frozen": True}
    assert api.get("/v1/sites/shop/priors").json()["version"] == 1
    bad = admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"version": 99})
    assert bad.status_code == 422 and bad.json()["field"] == "version"
    assert admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"v": 1}).status_code == 422
    admin(api, "POST", "/v1/admin/sites/shop/unfreeze")
    post(api, make_upload("batch-0012", n=10.0, reward=5.0))
    assert api.get("/v1/sites/shop/priors").json()["version"] == 3
    state = admin(api, "GET", "/v1/admin/sites/shop").json()
    assert state["uploads"] == 3 and [v["version"] for v in state["versions"]] == [1, 2, 3]


def test_the_report_has_rates_lift_and_off_policy_estimates(api):
    for i in range(5):
        post(api, make_upload(f"batch-r{i:03d}", n=100.0, reward=60.0))
    report = admin(api, "GET", "/v1/admin/sites/shop/report").json()
    cta = report["slots"]["cta"]
    assert cta["uploads"] == 5
    assert cta["variants"]["quiz"]["rate"] == pytest.approx(0.6)
    assert cta["variants"]["default"]["n"] == pytest.approx(250.0)  # holdout counted apart
    assert cta["lift"]["value"] == pytest.approx(cta["treated"]["rate"] - 0.0)
    assert cta["lift"]["low"] < cta["lift"]["value"] < cta["lift"]["high"]
    assert cta["current_policy"]["snips"]["value"] == pytest.approx(0.5)
    page = api.get("/report", auth=("admin", ADMIN))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<svg") == 1 and "quiz" in page.text and "holdout" in page.text
    assert api.get("/report?site=nowhere", auth=("admin", ADMIN)).status_code == 404


def test_decay_halves_old_contributions(tmp_path):
    from microadjust.server.storage import Storage

    store = Storage(data_dir=tmp_path)
    store.migrate()
    day = 86400.0
    store.record_upload("shop", "batch-d001", make_upload("batch-d001", n=100.0, reward=0.0),
                        half_life_s=10 * day, now=0.0)  # fmt: skip
    store.record_upload("shop", "batch-d002", make_upload("batch-d002", n=100.0, reward=0.0),
                        half_life_s=10 * day, now=10 * day)  # fmt: skip
    data, uploads, _ = store.aggregates("shop")["cta"]
    assert uploads == 2
    assert data["prior"]["actions"]["quiz"]["n"] == pytest.approx(150.0)
    assert data["report"]["actions"]["quiz"]["n"] == pytest.approx(200.0)  # the report keeps all


def test_migrations_are_versioned_and_idempotent(tmp_path):
    from microadjust.server.migrations import LATEST
    from microadjust.server.storage import Storage

    store = Storage(data_dir=tmp_path)
    assert store.migrate() == LATEST
    assert store.migrate() == LATEST
    with store._transaction() as run:
        rows = run("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))
    assert json.loads(json.dumps(store.site_state("shop")))["current_version"] is None
