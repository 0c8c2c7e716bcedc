"""Storage on SQLite and, when MICROADJUST_TEST_DATABASE_URL is set, on PostgreSQL: migrations,
exactly-once merges under concurrency, and two server instances sharing one store."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_sync_api import make_upload

from microadjust.server.limits import RateRule
from microadjust.server.migrations import LATEST
from microadjust.server.models import Upload
from microadjust.server.ratelimit import PostgresBuckets
from microadjust.server.storage import Received, Storage

PG_URL = os.environ.get("MICROADJUST_TEST_DATABASE_URL")
TABLES = ("uploads", "aggregates", "bucket_sums", "day_secrets", "site_declarations", "priors",
          "sites", "rate_limit_buckets", "released_increments", "schema_migrations")  # fmt: skip


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


def upload(batch_id: str) -> Upload:
    return Upload.model_validate(make_upload(batch_id))


def quiz_shown(store: Storage) -> float:
    """Exposures of quiz summed over every stored bucket-day."""
    return sum(
        row.sums.variants["device=mobile"]["quiz"][0]
        for row in store.bucket_rows("shop")
        if row.slot == "cta"
    )


def test_migrations_reach_the_latest_version(backend, tmp_path):
    store = open_store(backend, tmp_path)
    assert store.migrate() == LATEST and store.up_to_date
    store.close()


def test_the_rate_limit_table_is_created_by_a_migration(backend, tmp_path):
    """The shared rate-limit buckets come from migration 3, not from the first request: an
    instance whose database role may not create tables still limits, and the schema version
    says what is there."""
    store = open_store(backend, tmp_path)
    with store._transaction(write=False) as run:
        name = run("SELECT name FROM schema_migrations WHERE version = 3").fetchone()[0]
        assert run("SELECT COUNT(*) FROM rate_limit_buckets").fetchone()[0] == 0
    assert "rate-limit" in name
    if backend == "postgresql":
        buckets = PostgresBuckets(PG_URL)
        try:
            assert buckets.take([("upload:192.0.2.1", RateRule(0.001, 1))]) is None
            assert buckets.take([("upload:192.0.2.1", RateRule(0.001, 1))])[0] == 0
        finally:
            buckets.close()
    store.close()


def test_concurrent_uploads_and_retries_count_once(backend, tmp_path):
    store = open_store(backend, tmp_path)
    ids = [f"{i:032x}" for i in range(40)] * 3  # every batch sent three times
    with ThreadPoolExecutor(8) as pool:
        stored = list(
            pool.map(
                lambda b: store.record_upload("shop", upload(b), bucket=int(b[-1], 16) % 10), ids
            )
        )
    assert sum(stored) == 40
    assert store.upload_count("shop") == 40
    assert quiz_shown(store) == pytest.approx(40.0)
    assert {row.bucket for row in store.bucket_rows("shop")} == set(range(10))
    store.close()


def test_a_group_commit_stores_each_new_batch_once_and_sums_it_into_its_bucket(backend, tmp_path):
    """Many uploads in one transaction (the server's group commit): a batch id repeated within
    the group or stored before is refused, the rest are summed per bucket and day."""
    store = open_store(backend, tmp_path)
    assert store.record_upload("shop", upload("0" * 32), bucket=1, now=10.0)
    group = [
        Received("shop", upload("1" * 32), 1, 20.0),
        Received("shop", upload("0" * 32), 1, 20.0),  # stored before
        Received("shop", upload("2" * 32), 2, 20.0),
        Received("shop", upload("1" * 32), 1, 21.0),  # repeated within the group
        Received("other", upload("1" * 32), 1, 21.0),  # same id, another site
        Received("shop", upload("3" * 32), 2, 86_400.0 + 5),  # the next day
    ]
    assert store.record_uploads(group) == [True, False, True, False, True, True]
    assert store.upload_count("shop") == 4 and store.upload_count("other") == 1
    shown = {(r.day, r.bucket): r.sums.variants["device=mobile"]["quiz"][0]
             for r in store.bucket_rows("shop")}  # fmt: skip
    assert shown == {(0, 1): 2.0, (0, 2): 1.0, (1, 2): 1.0}
    assert store.site_state("shop").aggregated_at == 86_400.0 + 5
    assert store.record_uploads([]) == []
    store.close()


def test_two_instances_sharing_one_store_lose_no_update(backend, tmp_path):
    """Two Storage objects (as two server processes would have) merge into the same rows."""
    a, b = open_store(backend, tmp_path), open_store(backend, tmp_path)
    barrier = threading.Barrier(2)

    def run(store: Storage, offset: int) -> None:
        barrier.wait()
        for i in range(25):
            store.record_upload("shop", upload(f"{offset + i:032x}"), bucket=offset)

    threads = [threading.Thread(target=run, args=(s, k * 100)) for k, s in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert quiz_shown(a) == pytest.approx(50.0) and a.upload_count("shop") == 50
    a.close()
    b.close()


def served_version(store: Storage) -> int:
    return store.serving("shop")[1].version


class Releases:
    """A stand-in for the noise: records which uploads each release saw, in order."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, uploads):
        batch_ids = [u.batch_id for _, u in uploads]
        self.calls.append(batch_ids)
        return {"batches": batch_ids, "draw": len(self.calls)}, 2.0


def released(increments) -> list[list[str]]:
    return [i.counts["batches"] for i in increments if i.counts is not None]


def build(version, increments):
    return {"version": version, "increments": [(i.seq, i.counts["draw"]) for i in increments]}


def test_publish_prune_purge_and_rollback(backend, tmp_path):
    store = open_store(backend, tmp_path)
    release = Releases()
    store.record_upload("shop", upload("a" * 32), bucket=7, now=100.0)
    publish = lambda note, now, **kw: store.publish("shop", release, build, note=note, keep=2,  # noqa: E731
                                                    now=now, **kw)  # fmt: skip
    assert publish("first", 200.0) == 1
    assert publish("auto", 201.0, min_interval_s=0) is None  # nothing changed
    assert publish("second", 202.0) == 2
    assert publish("third", 203.0) == 3
    assert [v["version"] for v in store.versions("shop")] == [2, 3]  # pruned to keep=2
    assert release.calls == [["a" * 32]]  # released once, reused by every later version
    assert publish("next day", 86_400.0 + 5) == 4
    store.record_upload("shop", upload("b" * 32), bucket=7, now=86_400.0 + 10)
    assert store.rollback("shop", 4, now=86_400.0 + 20) == 1  # the upload after v4 is dropped
    assert served_version(store) == 4 and store.site_state("shop").frozen
    assert store.upload_count("shop") == 1 and quiz_shown(store) == pytest.approx(1.0)
    assert store.rollback("shop", 1) is None  # pruned
    assert store.purge("shop", batch_ids=["a" * 32]) == 1
    assert store.bucket_rows("shop") == []
    assert [i.counts for i in store.increments("shop")] == [None]  # waits for re-release
    assert publish("after the purge", 86_400.0 + 30) == 5
    assert store.increments("shop") == [] and len(release.calls) == 1  # nothing left: dropped
    store.close()


def test_an_increment_is_released_once_and_reused_by_every_instance(backend, tmp_path):
    a, b = open_store(backend, tmp_path), open_store(backend, tmp_path)
    release = Releases()
    a.record_upload("shop", upload("e" * 32), bucket=1, now=10.0)
    assert a.publish("shop", release, build, note="a", keep=5, now=20.0) == 1
    b.record_upload("shop", upload("f" * 32), bucket=2, now=30.0)
    assert b.publish("shop", release, build, note="b", keep=5, now=40.0) == 2
    a.close()
    restarted = open_store(backend, tmp_path)  # a restart: the same store, nothing in memory
    assert restarted.publish("shop", release, build, note="again", keep=5, now=50.0) == 3
    assert release.calls == [["e" * 32], ["f" * 32]]  # each upload noised exactly once
    increments = restarted.increments("shop")
    assert [(i.since, i.until) for i in increments] == [(0.0, 20.0), (20.0, 40.0)]
    assert restarted.serving("shop")[1].body == '{"version":3,"increments":[[1,1],[2,2]]}'
    # beyond the horizon an increment is neither summed nor kept
    assert restarted.publish("shop", release, build, note="later", keep=5, horizon=20.0,
                             now=60.0) == 4  # fmt: skip
    assert [i.seq for i in restarted.increments("shop")] == [2]
    b.close()
    restarted.close()


def test_a_purge_re_releases_what_is_left_of_the_increments_it_touched(backend, tmp_path):
    store = open_store(backend, tmp_path)
    release = Releases()
    for batch, t in (("0", 10.0), ("1", 11.0), ("2", 30.0)):
        store.record_upload("shop", upload(batch * 32), bucket=1, now=t)
        if t == 11.0:
            store.publish("shop", release, build, note="1", keep=5, now=20.0)
    store.publish("shop", release, build, note="2", keep=5, now=40.0)
    assert store.purge("shop", batch_ids=["0" * 32]) == 1
    assert [i.counts is None for i in store.increments("shop")] == [True, False]
    assert store.publish("shop", release, build, note="3", keep=5, now=50.0) == 3
    # the touched increment is released again, with fresh noise, without the purged upload;
    # the untouched one is reused as it was
    assert release.calls == [["0" * 32, "1" * 32], ["2" * 32], ["1" * 32]]
    assert released(store.increments("shop")) == [["1" * 32], ["2" * 32]]
    store.close()


def test_an_upload_whose_clock_ran_before_a_release_lands_in_the_next_increment(backend, tmp_path):
    store = open_store(backend, tmp_path)
    release = Releases()
    store.record_upload("shop", upload("3" * 32), bucket=1, now=10.0)
    store.publish("shop", release, build, note="1", keep=5, now=20.0)
    store.record_upload("shop", upload("4" * 32), bucket=1, now=15.0)  # committed after
    store.publish("shop", release, build, note="2", keep=5, now=30.0)
    assert released(store.increments("shop")) == [["3" * 32], ["4" * 32]]
    store.close()


def test_a_failed_build_changes_nothing(backend, tmp_path):
    store = open_store(backend, tmp_path)
    store.record_upload("shop", upload("c" * 32), bucket=1)

    def broken(version, increments):
        return {"not json": float("nan")}

    with pytest.raises(ValueError):
        store.publish("shop", Releases(), broken, note="nan", keep=5)
    assert store.versions("shop") == [] and store.increments("shop") == []
    assert store.site_state("shop").released_until == 0.0
    store.close()


def test_a_publication_raced_by_another_instance_yields(backend, tmp_path):
    """The document is built outside the write lock; the write notices a version in between,
    and the increment the loser drew is never stored (unpublished noise costs nothing)."""
    a, b = open_store(backend, tmp_path), open_store(backend, tmp_path)
    a.record_upload("shop", upload("d" * 32), bucket=3)
    release = Releases()

    def build_a(version, increments):
        other = b.publish("shop", release, lambda v, i: {"by": "b"}, note="b", keep=5)
        assert other == version
        return {"by": "a"}

    assert a.publish("shop", release, build_a, note="a", keep=5) is None
    assert served_version(a) == 1 and '"by":"b"' in a.serving("shop")[1].body
    assert [i.counts["draw"] for i in a.increments("shop")] == [2]  # b's draw only
    a.close()
    b.close()


def test_workers_starting_together_on_a_new_sqlite_file_both_open_it(tmp_path):
    """Switching to WAL is refused at once while another connection switches (no busy wait):
    two workers starting together on a new file failed about one start in three."""
    for attempt in range(30):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        barrier, errors = threading.Barrier(2), []

        def start(folder=folder, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                store = Storage(data_dir=folder)
                store.migrate()
                store.close()
            except Exception as error:  # noqa: BLE001 (the test reports any)
                errors.append(repr(error))

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"start {attempt}: {errors}"
