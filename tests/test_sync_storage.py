"""Storage on SQLite and, when MICROADJUST_TEST_DATABASE_URL is set, on PostgreSQL: migrations,
exactly-once merges under concurrency, and two server instances sharing one store."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_sync_api import MAX_SHOWN, make_upload

from microadjust.browser.privacy import local_sigma
from microadjust.server import storage as storage_module
from microadjust.server.aggregate import SlotSums, visitor_norm
from microadjust.server.limits import RateRule
from microadjust.server.migrations import LATEST, MIGRATIONS
from microadjust.server.models import SiteDeclaration, Upload
from microadjust.server.ratelimit import PostgresBuckets
from microadjust.server.release import Noised, capped_totals, increment_totals, noisy_increment
from microadjust.server.storage import Received, Storage

PG_URL = os.environ.get("MICROADJUST_TEST_DATABASE_URL")
TABLES = ("uploads", "aggregates", "bucket_sums", "day_secrets", "site_declarations", "priors",
          "sites", "rate_limit_buckets", "released_increments", "increment_sums",
          "schema_migrations")  # fmt: skip


def open_store(backend: str, tmp_path, max_shown: int = MAX_SHOWN) -> Storage:
    if backend == "sqlite":
        return Storage(data_dir=tmp_path, max_shown=max_shown)
    if not PG_URL:
        pytest.skip(
            "PostgreSQL not configured: set MICROADJUST_TEST_DATABASE_URL=postgresql://... "
            "(.ci/run starts a local server and sets it)"
        )
    return Storage(database_url=PG_URL, max_shown=max_shown)


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


def in_two_threads(start) -> None:
    """Run ``start`` in two threads at once, as two server instances starting together."""
    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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


def served_version_or_none(store: Storage) -> int | None:
    served = store.serving("shop")[1]
    return None if served is None else served.version


class Releases:
    """A stand-in for the noise: records which source buckets each release saw (the tests
    give each upload a bucket of its own) and how many exposures of quiz, in order."""

    def __init__(self):
        self.calls: list[list[int]] = []
        self.shown: list[float] = []

    def __call__(self, rows):
        buckets = sorted(row.bucket for row in rows)
        self.calls.append(buckets)
        self.shown.append(sum(quiz(row.sums) for row in rows))
        return Noised({"buckets": buckets, "draw": len(self.calls)}, 2.0, {})


def quiz(sums) -> float:
    return sum(variants.get("quiz", (0.0, 0.0))[0] for variants in sums.variants.values())


def released(increments) -> list[list[int]]:
    return [i.counts["buckets"] for i in increments if i.counts is not None]


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
    assert release.calls == [[7]]  # released once, reused by every later version
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
    assert release.calls == [[1], [2]]  # each upload noised exactly once
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
        store.record_upload("shop", upload(batch * 32), bucket=int(batch), now=t)
        if t == 11.0:
            store.publish("shop", release, build, note="1", keep=5, now=20.0)
    store.publish("shop", release, build, note="2", keep=5, now=40.0)
    assert store.purge("shop", batch_ids=["0" * 32]) == 1
    assert [i.counts is None for i in store.increments("shop")] == [True, False]
    assert store.publish("shop", release, build, note="3", keep=5, now=50.0) == 3
    # the touched increment is released again, with fresh noise, without the purged upload;
    # the untouched one is reused as it was
    assert release.calls == [[0, 1], [2], [1]]
    assert released(store.increments("shop")) == [[1], [2]]
    store.close()


def test_an_upload_whose_clock_ran_before_a_release_lands_in_the_next_increment(backend, tmp_path):
    store = open_store(backend, tmp_path)
    release = Releases()
    store.record_upload("shop", upload("3" * 32), bucket=3, now=10.0)
    store.publish("shop", release, build, note="1", keep=5, now=20.0)
    store.record_upload("shop", upload("4" * 32), bucket=4, now=15.0)  # committed after
    store.publish("shop", release, build, note="2", keep=5, now=30.0)
    assert released(store.increments("shop")) == [[3], [4]]
    store.close()


def test_a_failed_build_publishes_and_releases_nothing(backend, tmp_path):
    """The increment cut before the failure waits, unreleased, for the next publication."""
    store = open_store(backend, tmp_path)
    store.record_upload("shop", upload("c" * 32), bucket=1, now=10.0)

    def broken(version, increments):
        return {"not json": float("nan")}

    release = Releases()
    with pytest.raises(ValueError):
        store.publish("shop", release, broken, note="nan", keep=5, now=20.0)
    assert store.versions("shop") == [] and served_version_or_none(store) is None
    assert [(i.counts, i.until) for i in store.increments("shop")] == [(None, 20.0)]
    store.record_upload("shop", upload("d" * 32), bucket=2, now=25.0)
    assert store.publish("shop", release, build, note="again", keep=5, now=30.0) == 1
    assert release.calls == [[1], [1], [2]]  # the failed one's noise was never stored
    assert released(store.increments("shop")) == [[1], [2]]
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
                store = Storage(data_dir=folder, max_shown=MAX_SHOWN)
                store.migrate()
                store.close()
            except Exception as error:  # noqa: BLE001 (the test reports any)
                errors.append(repr(error))

        in_two_threads(start)
        assert errors == [], f"start {attempt}: {errors}"


# -- running sums of the increments (release.py, "Where the increment's sums come from") --------

SITE = SiteDeclaration(
    key="key-12345678",
    slots={"cta": ["default", "quiz", "deal"], "headline": ["default", "story"]},
    cells={"device": ["desktop", "mobile"]},
)


def random_upload(rng: np.random.Generator, batch_id: str) -> Upload:
    """An aggregate-mode upload of one or both slots, at most four exposures each."""
    slots = {}
    for slot, variants in SITE.slots.items():
        if slot == "cta" or rng.random() < 0.5:
            shown = rng.multinomial(int(rng.integers(1, 5)), np.ones(len(variants)) / len(variants))
            slots[slot] = {
                "cell": f"device={rng.choice(['desktop', 'mobile'])}",
                "variants": {
                    v: {"shown": int(n), "reward": int(rng.integers(0, n + 1))}
                    for v, n in zip(variants, shown, strict=True)
                    if n
                },
            }
    return Upload.model_validate({"v": 2, "batch_id": batch_id, "slots": slots})


def noising(seed: int, calls: list):
    """The server's release (api.py): capped running sums, noised with a seeded generator."""

    def release(rows):
        calls.append(rows)
        totals = capped_totals(rows, bucket_cap=2.0, max_shown=MAX_SHOWN)
        return noisy_increment(totals, SITE, sigma=3.0, rng=np.random.default_rng(seed))

    return release


def test_released_increments_are_the_old_computation_on_the_same_uploads(backend, tmp_path):
    """Summed as they arrive (in group commits of any size, over several increments), the
    uploads are released as the definition releases them read back at once: every bucket above
    the cap, every cell and variant, the same noisy numbers."""
    store = open_store(backend, tmp_path)
    rng = np.random.default_rng(3)
    arrived: list[list[Received]] = [[], []]
    t, count = 100.0, 0
    for part, cut in enumerate((1_000.0, 2_000.0)):
        while t < cut - 50:
            group = []
            for _ in range(int(rng.integers(1, 12))):
                t, count = t + float(rng.uniform(0.1, 5.0)), count + 1
                bucket = int(rng.integers(0, 6))  # few buckets: most of them above the cap
                group.append(Received("shop", random_upload(rng, f"{count:032x}"), bucket, t))
            assert all(store.record_uploads(group))
            arrived[part] += group
        calls: list = []
        assert store.publish("shop", noising(part, calls), lambda v, i: {"v": v},
                             note=str(part), keep=5, now=cut) == part + 1  # fmt: skip
    stored = [i.counts for i in store.increments("shop")]
    expected = [
        noisy_increment(
            increment_totals(
                [(r.bucket, r.upload.slots) for r in uploads], bucket_cap=2.0, max_shown=MAX_SHOWN
            ),
            SITE,
            sigma=3.0,
            rng=np.random.default_rng(part),
        ).counts
        for part, uploads in enumerate(arrived)
    ]
    assert stored == expected
    capped = [r for r in calls[0] if r.sums.norm() > 2.0 * 8]
    assert capped  # the cap was exercised
    store.close()


def increment_sums(store: Storage) -> list[tuple]:
    with store._transaction(write=False) as run:
        return run(
            "SELECT site, seq, slot, bucket, sums FROM increment_sums ORDER BY site, seq, slot, "
            "bucket"
        ).fetchall()


def test_a_refused_upload_changes_no_running_sum(backend, tmp_path):
    store = open_store(backend, tmp_path)
    store.record_uploads([Received("shop", upload("1" * 32), 1, 10.0)])
    before = (increment_sums(store), store.bucket_rows("shop"), store.site_state("shop"))
    assert store.record_uploads([Received("shop", upload("1" * 32), 2, 20.0)]) == [False]
    assert (increment_sums(store), store.bucket_rows("shop"), store.site_state("shop")) == before
    store.close()


def test_a_publication_during_uploads_loses_none_and_counts_none_twice(backend, tmp_path):
    """Uploads committed by another instance at every step of publications (before the cut,
    while the increment is released, while the document is built, with clocks that ran before
    the cut) land in exactly one released increment each."""
    writer, publisher = open_store(backend, tmp_path), open_store(backend, tmp_path)
    sent = iter(range(1_000))

    def upload_some(now: float, count: int = 3) -> None:
        group = [Received("shop", upload(f"{next(sent):032x}"), 5, now) for _ in range(count)]
        assert writer.record_uploads(group) == [True] * count

    release = Releases()

    def releasing(rows):
        upload_some(clock - 0.5)  # its clock ran before the cut
        return release(rows)

    def building(version, increments):
        upload_some(clock + 0.5)
        return build(version, increments)

    for step in range(4):
        clock = 100.0 * (step + 1)
        upload_some(clock - 1.0)
        assert publisher.publish("shop", releasing, building, note="p", keep=5, now=clock)
    assert publisher.publish("shop", release, build, note="last", keep=5, now=1_000.0)
    assert sum(release.shown) == 3 * (4 * 3) == writer.upload_count("shop")
    assert increment_sums(writer) == []  # nothing left unreleased
    windows = [(i.since, i.until) for i in writer.increments("shop")]
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    writer.close()
    publisher.close()


def test_migration_5_sums_the_uploads_not_yet_released(backend, tmp_path, monkeypatch):
    """A store of schema 4: the uploads of a purged (pending) increment and those after the
    last release are summed into their increments; a released one's are not."""
    monkeypatch.setattr(storage_module, "MIGRATIONS", MIGRATIONS[:4])
    tmp_path = tmp_path / "schema-4"
    old = open_store(backend, tmp_path)
    with old._transaction() as run:  # PostgreSQL: the fixture's schema goes
        for table in TABLES if backend == "postgresql" else ():
            run(f"DROP TABLE IF EXISTS {table} CASCADE")
    assert old.migrate() == 4
    with old._transaction() as run:  # schema 4 has no bound column: the row by hand
        run("INSERT INTO sites (site) VALUES ('shop')")
        for bucket, t in ((1, 10.0), (2, 30.0), (3, 50.0)):
            run("INSERT INTO uploads (site, batch_id, received_at, bucket, body) VALUES "
                "(?, ?, ?, ?, ?)", ("shop", f"{bucket:032x}", t, bucket,
                                    upload(f"{bucket:032x}").model_dump_json()))  # fmt: skip
        run("INSERT INTO released_increments (site, seq, since, until, sigma, counts, "
            "released_at) VALUES ('shop', 1, 0, 20, 2, ?, 20), ('shop', 2, 20, 40, 2, NULL, 40)",
            ('{"buckets": [1], "draw": 1}',))  # fmt: skip
        run("UPDATE sites SET released_until = 40, current_version = NULL WHERE site = 'shop'")
    old.close()
    monkeypatch.undo()
    store = open_store(backend, tmp_path)
    assert store.migrate() == LATEST
    assert [(seq, bucket) for _, seq, _, bucket, _ in increment_sums(store)] == [(2, 2), (3, 3)]
    release = Releases()
    assert store.publish("shop", release, build, note="after", keep=5, now=60.0) == 1
    assert release.calls == [[2], [3]]
    assert released(store.increments("shop")) == [[1], [2], [3]]
    store.close()


def test_automatic_publishing_waits_the_interval_after_another_publications_cut(backend, tmp_path):
    """A cut whose publication did not finish (it failed here; elsewhere it may still be
    running) holds automatic publishing off for the interval, then it is retried."""
    store = open_store(backend, tmp_path)
    store.record_upload("shop", upload("c" * 32), bucket=1, now=10.0)
    with pytest.raises(ValueError):
        store.publish("shop", Releases(), lambda v, i: {"nan": float("nan")}, note="x", keep=5,
                      now=20.0)  # fmt: skip
    release = Releases()
    auto = lambda now: store.publish("shop", release, build, note="auto", keep=5,  # noqa: E731
                                     min_interval_s=60.0, now=now)  # fmt: skip
    assert auto(50.0) is None and release.calls == []
    assert auto(80.0) == 1 and release.calls == [[1]]
    store.close()


def test_workers_starting_together_on_a_new_postgresql_database_both_migrate_it(tmp_path):
    """``CREATE TABLE IF NOT EXISTS`` is not safe against a concurrent create in PostgreSQL:
    two workers starting on a new database failed one start in a few (a duplicate key in
    pg_type), as bench/load_sync.py's fresh databases showed."""
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set MICROADJUST_TEST_DATABASE_URL")
    for attempt in range(8):  # it failed the first time without the lock
        store = Storage(database_url=PG_URL, max_shown=MAX_SHOWN)
        with store._transaction() as run:
            for table in TABLES:
                run(f"DROP TABLE IF EXISTS {table} CASCADE")
        store.close()
        barrier, errors = threading.Barrier(2), []

        def start(barrier=barrier, errors=errors):
            store = Storage(database_url=PG_URL, max_shown=MAX_SHOWN)
            try:
                barrier.wait()
                assert store.migrate() == LATEST
            except Exception as error:  # noqa: BLE001 (the test reports any)
                errors.append(repr(error))
            finally:
                store.close()

        in_two_threads(start)
        assert errors == [], f"start {attempt}: {errors}"


def test_the_devices_noise_of_local_mode_uploads_is_kept_with_their_increment(backend, tmp_path):
    """Summed as uploads arrive and stored with the released increment (read back as
    released), per slot and cell, ``*`` included; an aggregate-mode increment has none."""
    store = open_store(backend, tmp_path)
    local = make_upload("d" * 32, privacy={"mode": "local", "epsilon": 1.0}, shown=0.5)
    store.record_upload("shop", Upload.model_validate(local), bucket=1, now=10.0)
    assert store.publish("shop", noising(0, []), lambda v, i: {"v": v}, note="local", keep=5,
                         now=20.0) == 1  # fmt: skip
    store.record_upload("shop", upload("e" * 32), bucket=2, now=30.0)
    assert store.publish("shop", noising(1, []), lambda v, i: {"v": v}, note="exact", keep=5,
                         now=40.0) == 2  # fmt: skip
    first, second = store.increments("shop")
    per_number = min(local_sigma(1.0, MAX_SHOWN) ** 2, visitor_norm(MAX_SHOWN) ** 2 / (2 * 2 * 2))
    expected = pytest.approx({"device=mobile": per_number, "*": per_number}, rel=1e-4)
    assert first.local_noise == {"cta": expected} and second.local_noise == {}
    store.close()


def test_a_store_reopened_with_another_bound_rescales_what_is_not_released(backend, tmp_path):
    """Uploads summed under max_shown 4 and not yet released are projected onto the ball of
    a server restarted with 2 (whose release noise is calibrated for 2); released increments
    and the stored uploads stay; the same bound again rebuilds nothing."""
    store = open_store(backend, tmp_path)
    store.record_upload("shop", upload("f" * 32), bucket=1, now=10.0)
    assert store.publish("shop", noising(0, []), lambda v, i: {"v": v}, note="1", keep=5,
                         now=20.0) == 1  # fmt: skip
    big = make_upload("a" * 32, shown=4, reward=4)  # norm 8 with its * cell: a bound-4 visitor
    store.record_upload("shop", Upload.model_validate(big), bucket=2, now=30.0)
    released_before = store.increments("shop")
    assert store.match_bound(now=40.0) == []
    store.close()
    smaller = open_store(backend, tmp_path, max_shown=2)
    assert smaller.match_bound(now=50.0) == ["shop"]
    sums = [SlotSums.from_json(text) for *_, text in increment_sums(smaller)]
    assert len(sums) == 1 and sums[0].norm() == pytest.approx(visitor_norm(2))
    assert smaller.increments("shop") == released_before and smaller.upload_count("shop") == 2
    assert smaller.match_bound(now=60.0) == []
    smaller.close()
