"""Storage on SQLite and, when MICROADJUST_TEST_DATABASE_URL is set, on PostgreSQL: migrations,
exactly-once merges under concurrency, and two server instances sharing one store."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_sync_api import make_upload

from microadjust.server.migrations import LATEST
from microadjust.server.storage import Storage

PG_URL = os.environ.get("MICROADJUST_TEST_DATABASE_URL")
TABLES = ("uploads", "aggregates", "priors", "sites", "schema_migrations")


def open_store(backend: str, tmp_path) -> Storage:
    if backend == "sqlite":
        return Storage(data_dir=tmp_path)
    if not PG_URL:
        pytest.skip(
            "PostgreSQL not configured: set MICROADJUST_TEST_DATABASE_URL=postgresql://... "
            "(.ci/run starts a local server and sets it)"
        )
    return Storage(database_url=PG_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    store = open_store(request.param, tmp_path)
    if store.dialect == "postgresql":
        with store._transaction() as run:
            for table in TABLES:
                run(f"DROP TABLE IF EXISTS {table} CASCADE")
    store.migrate()
    yield request.param
    store.close()


def quiz_n(store: Storage) -> float:
    return store.aggregates("shop")["cta"][0]["report"]["actions"]["quiz"]["n"]


def test_migrations_reach_the_latest_version(backend, tmp_path):
    store = open_store(backend, tmp_path)
    assert store.migrate() == LATEST and store.up_to_date
    store.close()


def test_concurrent_uploads_and_retries_count_once(backend, tmp_path):
    store = open_store(backend, tmp_path)
    ids = [f"batch-{i:04d}" for i in range(40)] * 3  # every batch sent three times
    with ThreadPoolExecutor(8) as pool:
        stored = list(
            pool.map(
                lambda b: store.record_upload("shop", b, make_upload(b), half_life_s=1e12), ids
            )
        )
    assert sum(stored) == 40
    assert store.upload_count("shop") == 40
    assert quiz_n(store) == pytest.approx(40.0)
    assert store.aggregates("shop")["cta"][1] == 40
    store.close()


def test_two_instances_sharing_one_store_lose_no_update(backend, tmp_path):
    """Two Storage objects (as two server processes would have) merge into the same rows."""
    a, b = open_store(backend, tmp_path), open_store(backend, tmp_path)
    barrier = threading.Barrier(2)

    def run(store: Storage, offset: int) -> None:
        barrier.wait()
        for i in range(25):
            batch = f"batch-{offset + i:04d}"
            store.record_upload("shop", batch, make_upload(batch), half_life_s=1e12)

    threads = [threading.Thread(target=run, args=(s, k * 100)) for k, s in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert quiz_n(a) == pytest.approx(50.0) and a.upload_count("shop") == 50
    a.close()
    b.close()


def test_publish_and_rollback(backend, tmp_path):
    store = open_store(backend, tmp_path)
    store.record_upload("shop", "batch-p001", make_upload("batch-p001"), half_life_s=1e12)
    build = lambda version, aggs: {"version": version, "slots": sorted(aggs)}  # noqa: E731
    assert store.publish("shop", build, note="first") == 1
    assert store.publish("shop", build, note="auto", min_interval_s=0) is None  # unchanged
    assert store.publish("shop", build, note="second") == 2
    assert store.current_prior("shop")[0] == 2
    assert store.rollback("shop", 1) and store.current_prior("shop")[0] == 1
    assert store.site_state("shop")["frozen"] is True
    assert not store.rollback("shop", 7)
    store.close()
