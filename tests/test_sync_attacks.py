"""One regression test per attack of the sync-hardening issue that the server answers (the
forged-within-bounds attack is tests/test_sync_poisoning.py; rate limits, slow bodies, static
paths and headers are the serving layer's tests)."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
from test_sync_api import ADMIN, KEY, admin, batch, make_upload, post, priors, raw_post, settings
from test_sync_storage import PG_URL, TABLES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import microadjust.server.api as api_module
from microadjust.server.api import create_app
from microadjust.server.cli import add_sync_arguments, settings_from_args
from microadjust.server.config import SyncSettings
from microadjust.server.limits import RateRule, ServingLimits
from microadjust.server.storage import Storage


@pytest.fixture
def api(tmp_path):
    lifted = RateRule(1e9, 10**9)  # every upload comes from one test client
    unlimited = settings(
        tmp_path, rate_per_s=1e9, rate_burst=10**9, limits=ServingLimits(upload_per_ip=lifted)
    )
    with TestClient(create_app(unlimited, rng=np.random.default_rng(0))) as client:
        yield client


def strict_json(text: str) -> dict:
    """Parse as a browser would: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in a priors body")

    return json.loads(text, parse_constant=refuse)


def best(client, slot: str = "cta", cell: str = "*") -> str:
    counts = priors(client).json()["slots"][slot]["cells"][cell]
    rates = {v: c["reward"] / c["shown"] for v, c in counts.items() if c["shown"] >= 1}
    return max(rates, key=rates.get)


def test_poisoning_with_1e9_counts_is_refused(api):
    response = post(api, make_upload(variant="deal", shown=1e9, reward=1e9))
    assert response.status_code == 422
    assert response.json()["field"] == "slots.cta.variants.deal.shown"
    assert admin(api, "GET", "/v1/admin/sites/shop").json()["uploads"] == 0


def test_300_honest_uploads_after_a_forgery_keep_the_honest_best(api):
    assert post(api, make_upload(variant="deal", shown=0, reward=4)).status_code == 200
    for i in range(300):  # quiz is clicked 1 time in 3, default never
        post(api, make_upload(variant="quiz", shown=1, reward=int(i % 3 == 0)))
        post(api, make_upload(variant="deal", shown=1, reward=0))
        post(api, make_upload(variant="default", shown=1, reward=0))
    assert best(api) == "quiz"


def test_purge_and_rollback_remove_a_forgery_for_good(api):
    for _ in range(30):
        post(api, make_upload(variant="quiz", shown=2, reward=1))
    assert best(api) == "quiz"
    forged = [batch() for _ in range(40)]
    for batch_id in forged:
        post(api, make_upload(batch_id, variant="deal", shown=4, reward=4))
    assert best(api) == "deal"
    purged = admin(api, "POST", "/v1/admin/sites/shop/uploads/purge", json={"batch_ids": forged})
    assert purged.json()["purged_uploads"] == 40
    assert best(api) == "quiz"
    version = priors(api).json()["version"]
    for _ in range(40):
        post(api, make_upload(variant="deal", shown=4, reward=4))
    assert best(api) == "deal"
    admin(api, "POST", "/v1/admin/sites/shop/rollback", json={"version": version})
    admin(api, "POST", "/v1/admin/sites/shop/unfreeze")
    post(api, make_upload(variant="quiz", shown=1, reward=1))
    assert best(api) == "quiz"  # the rolled-back uploads did not come back


def test_a_2176_pair_bloat_upload_is_refused(api):
    slots = {
        f"slot{i}": {
            "cell": "*",
            "variants": {f"v{j}": {"shown": 0, "reward": 0} for j in range(64)},
        }
        for i in range(34)
    }  # 34 x 64 = 2,176 slot-variant pairs
    body = json.dumps(make_upload(slots=slots)).encode()
    response = raw_post(api, body)
    assert response.status_code == 413
    small = {name: entry for name, entry in list(slots.items())[:2]}  # fits in 16 KiB
    answer = post(api, make_upload(slots=small)).json()
    assert answer["accepted"] == {} and set(answer["refused"]) == {"slot0", "slot1"}
    assert len(priors(api).content) < 4096


def test_dim_4096_is_refused(api):
    response = post(api, make_upload(schema={"features": {"dim": 4096}}))
    assert response.status_code == 422 and response.json()["field"] == "schema"
    assert priors(api).status_code == 200


def test_40_fake_slots_are_refused_and_never_published(api):
    body = make_upload()
    for i in range(40):
        body["slots"][f"fake{i}"] = {"cell": "*", "variants": {"x": {"shown": 1, "reward": 1}}}
    answer = post(api, body).json()
    assert answer["accepted"] == {"cta": "ok"} and len(answer["refused"]) == 40
    assert set(priors(api).json()["slots"]) == {"cta", "headline"}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_a_field_is_refused_and_priors_stay_valid_json(api, constant):
    body = json.dumps(make_upload()).replace('"shown": 1', f'"shown": {constant}')
    response = raw_post(api, body.encode())
    assert response.status_code == 422
    assert response.json()["field"] == "slots.cta.variants.quiz.shown"
    post(api, make_upload())
    assert strict_json(priors(api).text)["version"] == 1


def test_first_upload_no_longer_fixes_the_schema(api):
    """The declaration decides the slot's space, so two honest batches never conflict (was 409)."""
    first = post(api, make_upload(variant="quiz"))
    second = post(api, make_upload(variant="deal", cell="device=desktop"))
    assert first.status_code == second.status_code == 200
    assert second.json()["accepted"] == {"cta": "ok"}


def test_a_failed_publish_keeps_serving_the_last_good_prior(api, monkeypatch):
    post(api, make_upload())
    good = priors(api)
    assert good.json()["version"] == 1

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(api_module, "priors_document", broken)
    post(api, make_upload())
    served = priors(api)
    assert served.status_code == 200 and served.json()["version"] == 1
    assert served.headers["etag"] == good.headers["etag"]
    failed = admin(api, "POST", "/v1/admin/sites/shop/publish")
    assert failed.status_code == 503 and "still served" in failed.json()["error"]
    assert admin(api, "GET", "/v1/admin/sites/shop").json()["current_version"] == 1


def test_a_failing_store_keeps_serving_the_last_good_prior(api, monkeypatch):
    post(api, make_upload())
    good = priors(api)
    storage = api.app.state.storage

    def down(*args, **kwargs):
        raise OSError("database is unavailable")

    for method in ("serving", "declarations", "publish"):
        monkeypatch.setattr(storage, method, down)
    server = api.app.state.api
    server._invalidate("shop")
    server._sites_loaded_at = 0.0  # the declarations are due for a re-read, which fails too
    served = priors(api)
    assert served.status_code == 200 and served.content == good.content


def test_old_prior_versions_are_pruned(tmp_path):
    with TestClient(create_app(settings(tmp_path, keep_versions=3))) as client:
        for _ in range(6):
            post(client, make_upload())
            priors(client)
        versions = admin(client, "GET", "/v1/admin/sites/shop").json()["versions"]
    assert [v["version"] for v in versions] == [4, 5, 6]


def published_cells(client: TestClient) -> dict:
    return priors(client).json()["slots"]["cta"]["cells"]


def test_republishing_reuses_the_released_noise_in_every_instance_and_after_a_restart(tmp_path):
    """An averaging reader learns nothing from many publications: no new noise is ever drawn
    for an upload already released, however often, by whichever instance, after restarts."""
    noisy = settings(tmp_path, rho_per_release=0.5)
    clock = lambda: 1_000_000.0  # noqa: E731  (the decay weights stay the same too)
    with TestClient(create_app(noisy, rng=np.random.default_rng(1), clock=clock)) as first:
        post(first, make_upload())
        published = published_cells(first)
        for _ in range(3):
            assert admin(first, "POST", "/v1/admin/sites/shop/publish").status_code == 200
        assert priors(first).json()["version"] == 4
        assert published_cells(first) == published
    with TestClient(create_app(noisy, rng=np.random.default_rng(2), clock=clock)) as restarted:
        assert published_cells(restarted) == published  # served as stored
        assert admin(restarted, "POST", "/v1/admin/sites/shop/publish").status_code == 200
        assert published_cells(restarted) == published  # rebuilt from the same increment
        state = admin(restarted, "GET", "/v1/admin/sites/shop").json()
    assert state["privacy"]["rho_per_period"] == 0.5


DEEP = b"[" * 30_000 + b"]" * 30_000
HUGE_INTEGER = (
    b'{"v": 2, "batch_id": "'
    + b"a" * 32
    + b'", "slots": {"cta": {"cell": "*", '
    + (b'"variants": {"quiz": {"shown": 1' + b"0" * 400 + b', "reward": 0}}}}}')
)
LONE_SURROGATE = b'{"v": 2, "batch_id": "\\ud800", "slots": {}}'
LONE_SURROGATE_KEY = b'{"v": 2, "batch_id": "' + b"a" * 32 + b'", "slots": {"\\udc00": {}}}'
BAD_UTF8 = b'{"v": 2, "batch_id": "\xff\xfe"}'


@pytest.mark.parametrize(
    "body",
    [DEEP[:16_000] + DEEP[-300:], HUGE_INTEGER, LONE_SURROGATE, LONE_SURROGATE_KEY, BAD_UTF8],
    ids=["30000-deep-json", "400-digit-integer", "lone-surrogate", "lone-surrogate-key", "utf8"],
)
@pytest.mark.parametrize(
    "path",
    [
        "/v1/sites/shop/uploads",
        "/v1/admin/sites/shop",
        "/v1/admin/sites/shop/rollback",
        "/v1/admin/sites/shop/uploads/purge",
    ],
)
def test_parser_attacks_get_400_or_422_not_500(api, body, path):
    method = "PUT" if path == "/v1/admin/sites/shop" else "POST"
    headers = {"Content-Type": "application/json", "X-Microadjust-Key": KEY,
               "Authorization": f"Bearer {ADMIN}"}  # fmt: skip
    response = api.request(method, path, content=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert set(strict_json(response.text)) == {"error", "field"}


def test_a_30000_deep_json_admin_body_is_refused(api):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"}
    response = api.put("/v1/admin/sites/shop", content=DEEP, headers=headers)
    assert response.status_code == 400 and response.json()["field"] == "body"


# -- a source with many addresses ------------------------------------------------------------

BUDGET = 5
PROXY = "10.0.0.1"  # the flood arrives through a trusted proxy that names each address


@pytest.fixture(params=["memory", "postgresql"])
def budget_store(request, tmp_path) -> str | None:
    """``None``: SQLite and this process's buckets; else a fresh PostgreSQL for both."""
    if request.param == "memory":
        return None
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set MICROADJUST_TEST_DATABASE_URL=postgresql://...")
    store = Storage(database_url=PG_URL)
    try:
        with store._transaction() as run:
            for table in TABLES:
                run(f"DROP TABLE IF EXISTS {table} CASCADE")
        store.migrate()
    finally:
        store.close()
    return PG_URL


def budget_settings(tmp_path, database_url: str | None, budget: int = BUDGET) -> SyncSettings:
    return settings(
        tmp_path,
        upload_budget=budget,
        database_url=database_url,
        limits=ServingLimits(trusted_proxies=(PROXY,)),
    )


@contextmanager
def instances(values: SyncSettings) -> Iterator[list[TestClient]]:
    """Two app instances on one shared store (PostgreSQL), or one with in-process buckets."""
    count = 2 if values.database_url else 1
    with ExitStack() as stack:
        yield [
            stack.enter_context(TestClient(create_app(values), client=(PROXY, 4000)))
            for _ in range(count)
        ]


def from_address(client: TestClient, index: int, body: dict):
    """``body`` uploaded from address ``index`` of the attacker's many (one upload each, so no
    per-address limit is ever reached)."""
    address = f"198.51.{index // 256}.{index % 256}"
    headers = {"X-Microadjust-Key": KEY, "X-Forwarded-For": address}
    return client.post("/v1/sites/shop/uploads", json=body, headers=headers)


def stored_state(client: TestClient) -> tuple:
    """Everything an upload could change: the site's state, its stored uploads, their sums."""
    site = admin(client, "GET", "/v1/admin/sites/shop").json()
    uploads = admin(client, "GET", "/v1/admin/sites/shop/uploads").json()["uploads"]
    sums = client.app.state.storage.bucket_rows("shop")
    return site, uploads, sums


def test_many_ip_flood_is_bounded_by_the_site_budget(tmp_path, budget_store):
    with instances(budget_settings(tmp_path, budget_store)) as clients:
        answers = [
            from_address(clients[i % len(clients)], i, make_upload(variant="deal", shown=4))
            for i in range(4 * BUDGET)
        ]
        assert [a.status_code for a in answers] == [200] * BUDGET + [429] * (3 * BUDGET)
        refused = answers[-1]
        assert refused.json()["field"] == "upload_budget"
        assert f"at most {BUDGET} uploads per 86400 s" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 86_400 / BUDGET - 1
        for client in clients:  # every instance sees the same store and the same count
            assert admin(client, "GET", "/v1/admin/sites/shop").json()["uploads"] == BUDGET


def test_an_upload_refused_by_the_spent_budget_changes_nothing(tmp_path, budget_store):
    with instances(budget_settings(tmp_path, budget_store)) as clients:
        for i in range(BUDGET):
            assert from_address(clients[0], i, make_upload()).status_code == 200
        before = stored_state(clients[0])
        for i in range(BUDGET, 3 * BUDGET):  # new addresses, new cells, new batches
            answer = from_address(clients[-1], i, make_upload(cell="device=desktop"))
            assert answer.status_code == 429
        assert stored_state(clients[0]) == before


def test_invalid_uploads_do_not_spend_the_site_budget(tmp_path, budget_store):
    """The budget is taken after validation: a flood of uploads refused for their content
    cannot lock honest visitors out."""
    with instances(budget_settings(tmp_path, budget_store, budget=2)) as clients:
        client = clients[-1]
        junk = [make_upload(shown=5), make_upload(slot="fake"), make_upload(cell="device=tv")]
        statuses = [from_address(client, i, junk[i % 3]).status_code for i in range(30)]
        assert set(statuses) == {200, 422}  # 200: every slot refused, nothing to store
        honest = [from_address(client, 100 + i, make_upload()).status_code for i in range(3)]
        assert honest == [200, 200, 429]


def test_the_upload_budget_is_a_server_option():
    parser = argparse.ArgumentParser()
    add_sync_arguments(parser)
    assert settings_from_args(parser.parse_args([])).upload_budget == 1_000_000
    assert settings_from_args(parser.parse_args(["--upload-budget", "300"])).upload_budget == 300
    with pytest.raises(ValueError, match="upload_budget must be an integer >= 1, got 0"):
        settings_from_args(parser.parse_args(["--upload-budget", "0"]))
