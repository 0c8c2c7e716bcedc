"""Durable state of the sync server: SQLite in a data directory, or PostgreSQL.

What is kept (protocol section 4): each accepted upload as received (no identifier) with its
receive time, batch id and source bucket; per site, UTC day, slot and source bucket the sum of
those uploads (the admin's report reads it; rebuilt from the uploads after a purge); per
increment not yet released, slot and source bucket the running sum of its uploads (what a
publication releases, so that it never reads raw uploads back: :mod:`.release`); the noisy
increments released so far (each upload is noised once, in the increment of the first
publication after it arrived, and that increment is reused by every later publication); the
declared sites changed through the admin API; published prior versions (the
last ``keep`` of them); the day's secret of the source buckets (deleted once the day is over).

SQLite (the default) runs in WAL mode with ``synchronous=FULL``: an upload is acknowledged only
after its transaction is on disk, so a crash never loses an acknowledged batch. PostgreSQL
(``--database-url postgresql://...``) lets several server instances share one store; every
write that touches a site locks that site's row (``SELECT ... FOR UPDATE``), so merges from
different instances serialize. In both, a batch id is a primary key: a retried batch is
recognized and never counted twice, and the batch's merge happens in the same transaction as
its id is recorded. Uploads arriving together are stored together (:meth:`Storage.record_uploads`,
one transaction, one commit, one lock per site for all of them: group commit), each still
acknowledged only once that commit is durable.

The methods are synchronous (DB-API); the API calls them from a thread pool. Each thread has
its own connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..browser.privacy import DEFAULT_MAX_SHOWN
from .aggregate import BucketRow, SlotSums, parse_bucket_rows, upload_sums
from .migrations import DATA_FROM_UPLOADS, LATEST, MIGRATIONS
from .models import SiteDeclaration, Upload
from .release import Increment, Noised

__all__ = ["Storage", "SiteState", "StoredUpload", "Received", "Published", "DAY_S", "Release"]

DAY_S = 86_400


def day_of(t: float) -> int:
    """The UTC day number of a unix time."""
    return int(t // DAY_S)


def dumps(value: Any) -> str:
    """Compact JSON that refuses NaN and infinities (they are not JSON)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class SiteState:
    """A site's publication state."""

    current_version: int | None = None
    frozen: bool = False
    aggregated_at: float = 0.0
    published_at: float = 0.0
    released_until: float = 0.0  # uploads received up to this are in a cut increment


@dataclass(frozen=True, slots=True)
class Published:
    """One published prior version, as stored."""

    version: int
    body: str
    etag: str


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """One stored upload, for the admin's list."""

    batch_id: str
    received_at: float
    bucket: int
    slots: list[str]


@dataclass(frozen=True, slots=True)
class Received:
    """One validated upload to store: its site, its accepted slots, source bucket and time."""

    site: str
    upload: Upload
    bucket: int
    received_at: float


SumsKey = tuple[str, int, str, int]  # site, day (or increment seq), slot, source bucket
# one increment's per-(slot, source bucket) sums (release.capped_totals) -> what is drawn
Release = Callable[[list[BucketRow]], Noised]
Window = tuple[int, float, float]  # an increment not yet released: seq, since, until
# a site's row; its running sums are scaled to this store's bound from the start
NEW_SITE = "INSERT INTO sites (site, sums_max_shown) VALUES (?, ?) ON CONFLICT DO NOTHING"
ROWS_PER_STATEMENT = 100  # rows of one multi-row statement (SQLite allows 32,766 parameters)
WAL_ATTEMPTS = 100  # 50 ms apart: a worker waits at most 5 s for another to switch to WAL
MIGRATION_LOCK = 0x6D61646A  # PostgreSQL advisory lock of the instances creating the schema


def _rows(count: int, columns: int) -> str:
    """``(?, ?), (?, ?)``: the VALUES of a multi-row statement."""
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * count)


def _chunks(items: Sequence[Any], size: int = ROWS_PER_STATEMENT) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upload_row(received: Received) -> tuple[str, str, float, int, str]:
    upload = received.upload
    return (received.site, upload.batch_id, received.received_at, received.bucket,
            upload.model_dump_json())  # fmt: skip


STATE_QUERY = (
    "SELECT current_version, frozen, aggregated_at, published_at, released_until "
    "FROM sites WHERE site = ?"
)


def _state(row: Sequence[Any] | None) -> SiteState:
    if row is None:
        return SiteState()
    version, frozen, aggregated_at, published_at, released_until = row
    return SiteState(
        None if version is None else int(version),
        bool(frozen),
        float(aggregated_at),
        float(published_at),
        float(released_until),
    )


def _write_ahead_log(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode, which the file keeps. Switching takes the file alone, and
    SQLite refuses it at once (no busy wait) while another connection switches too, as two
    workers do when they start together on a new file: so look first, and wait a little."""
    for attempt in range(WAL_ATTEMPTS):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05)


class Storage:
    """Uploads, per-bucket sums, declared sites, published prior versions and site state."""

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        database_url: str | None = None,
        max_shown: int = DEFAULT_MAX_SHOWN,
    ):
        self.max_shown = max_shown  # one upload is summed as at most one visitor's norm
        if database_url:
            if not database_url.startswith(("postgresql://", "postgres://")):
                raise ValueError("--database-url must be a postgresql:// URL")
            self.dialect = "postgresql"
            self.url = database_url
            self.path = None
        else:
            self.dialect = "sqlite"
            directory = Path(data_dir or "data")
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / "microadjust-sync.sqlite3"
            self.url = None
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    # -- connections and transactions -------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self.dialect == "postgresql" and conn.broken:
            conn = None
        if conn is None:
            if self.dialect == "sqlite":
                conn = sqlite3.connect(
                    self.path, isolation_level=None, timeout=30, check_same_thread=False
                )
                _write_ahead_log(conn)
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
            else:
                import psycopg

                conn = psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _transaction(self, *sites: str, write: bool = True) -> Iterator[Callable[..., Any]]:
        """A transaction; the rows of ``sites`` exist and are locked until commit (in sorted
        order, so that two instances locking the same sites never deadlock)."""
        conn = self._connection()

        def run(sql: str, params: Sequence[Any] = ()) -> Any:
            return conn.execute(self._sql(sql), params)

        if self.dialect == "sqlite":
            # a writer takes SQLite's single write lock up front; readers never block (WAL)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                for site in sorted(sites):
                    run(NEW_SITE, (site, self.max_shown))
                yield run
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                for site in sorted(sites):
                    run(NEW_SITE, (site, self.max_shown))
                    run("SELECT site FROM sites WHERE site = ? FOR UPDATE", (site,))
                yield run

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):  # e.g. already closed by the database
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- migrations ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the missing migrations in order; return the schema version."""
        with self._transaction() as run:
            if self.dialect == "postgresql":  # IF NOT EXISTS is not safe against a concurrent
                run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))  # create: one at a time
            run(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
        for version, name, statements in MIGRATIONS:
            with self._transaction() as run:
                if self.dialect == "postgresql":  # one migrator at a time across instances
                    run("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                done = run("SELECT 1 FROM schema_migrations WHERE version = ?", (version,))
                if done.fetchone():
                    continue
                for statement in statements:
                    run(statement)
                if version == DATA_FROM_UPLOADS:
                    for (site,) in run("SELECT site FROM sites").fetchall():
                        self._replace_increment_sums(run, site, self._sums_of_uploads(run, site)[1])
                run(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
        return self.schema_version()

    def schema_version(self) -> int:
        with self._transaction(write=False) as run:
            row = run("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    @property
    def up_to_date(self) -> bool:
        return self.schema_version() == LATEST

    # -- declared sites ---------------------------------------------------------------------

    def declarations(self) -> dict[str, SiteDeclaration]:
        """Sites declared (or re-declared) through the admin API."""
        with self._transaction(write=False) as run:
            rows = run("SELECT site, body FROM site_declarations ORDER BY site").fetchall()
        return {site: SiteDeclaration.model_validate_json(body) for site, body in rows}

    def declare(self, site: str, declaration: SiteDeclaration, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            run(
                "INSERT INTO site_declarations (site, body, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                (site, declaration.model_dump_json(), now),
            )
            run("UPDATE sites SET aggregated_at = ? WHERE site = ?", (now, site))

    # -- source buckets ------------------------------------------------------------------------

    def day_secret(self, day: int) -> bytes:
        """The secret keying today's source buckets; the secrets of earlier days are deleted."""
        with self._transaction() as run:
            run("DELETE FROM day_secrets WHERE day < ?", (day,))
            run(
                "INSERT INTO day_secrets (day, secret) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (day, secrets.token_hex(32)),
            )
            row = run("SELECT secret FROM day_secrets WHERE day = ?", (day,)).fetchone()
        return bytes.fromhex(row[0])

    # -- uploads --------------------------------------------------------------------------

    def record_upload(
        self, site: str, upload: Upload, *, bucket: int, now: float | None = None
    ) -> bool:
        """Store one validated upload (its accepted slots only) and add it to its bucket's
        sums of the day; False, and nothing changes, if this batch id was already stored."""
        now = time.time() if now is None else now
        return self.record_uploads([Received(site, upload, bucket, now)])[0]

    def record_uploads(self, batch: Sequence[Received]) -> list[bool]:
        """Store uploads in one transaction and add them to their buckets' sums of the day;
        for each, False if its batch id was already stored (or came earlier in ``batch``).
        One commit for all: the group commit that lets the server keep up with many uploads."""
        if not batch:
            return []
        sites = sorted({r.site for r in batch})
        with self._transaction(*sites) as run:
            batch, open_seqs = self._after_release(run, sites, batch)
            first: dict[tuple[str, str], Received] = {}  # a batch id repeated in the batch
            for received in batch:
                first.setdefault((received.site, received.upload.batch_id), received)
            inserted: set[tuple[str, str]] = set()
            for rows in _chunks(list(first.values())):
                cursor = run(
                    "INSERT INTO uploads (site, batch_id, received_at, bucket, body) VALUES "
                    f"{_rows(len(rows), 5)} ON CONFLICT DO NOTHING RETURNING site, batch_id",
                    [value for r in rows for value in _upload_row(r)],
                )
                inserted.update((site, batch_id) for site, batch_id in cursor.fetchall())
            stored = [
                first[key] is r and key in inserted
                for r in batch
                for key in [(r.site, r.upload.batch_id)]
            ]
            days: dict[SumsKey, SlotSums] = {}
            increments: dict[SumsKey, SlotSums] = {}
            aggregated_at: dict[str, float] = {}
            for received, new in zip(batch, stored, strict=True):
                if new:
                    site = received.site
                    self._sum_into(days, increments, received, open_seqs[site])
                    aggregated_at[site] = max(aggregated_at.get(site, 0.0), received.received_at)
            self._merge_sums(run, "bucket_sums", "day", days)
            self._merge_sums(run, "increment_sums", "seq", increments)
            for site, at in aggregated_at.items():
                run("UPDATE sites SET aggregated_at = ? WHERE site = ?", (at, site))
        return stored

    def _after_release(
        self, run: Callable[..., Any], sites: Sequence[str], batch: Sequence[Received]
    ) -> tuple[list[Received], dict[str, int]]:
        """``batch`` with each receive time raised above its site's ``released_until``, and
        each site's open increment: an upload whose clock ran before a cut it commits after
        belongs to the next increment, never to one already cut (which would lose it)."""
        rows = run(
            "SELECT site, released_until, open_seq FROM sites "
            f"WHERE site IN ({', '.join('?' * len(sites))})",
            tuple(sites),
        ).fetchall()
        released = {site: float(until) for site, until, _ in rows}
        batch = [
            r if r.received_at > released[r.site]
            else replace(r, received_at=math.nextafter(released[r.site], math.inf))
            for r in batch
        ]  # fmt: skip
        return batch, {site: int(seq) for site, _, seq in rows}

    def _sum_into(
        self,
        days: dict[SumsKey, SlotSums],
        increments: dict[SumsKey, SlotSums],
        received: Received,
        seq: int | None,
    ) -> None:
        """Add an upload to its bucket's sums of the day and, unless ``seq`` is None (an
        increment already released), of increment ``seq``."""
        site, bucket, day = received.site, received.bucket, day_of(received.received_at)
        noise_sd = received.upload.privacy.noise_sd(self.max_shown)
        for slot, entry in received.upload.slots.items():
            sums = upload_sums(entry, self.max_shown, noise_sd)
            days.setdefault((site, day, slot, bucket), SlotSums()).add(sums)
            if seq is not None:
                increments.setdefault((site, seq, slot, bucket), SlotSums()).add(sums)

    def _merge_sums(
        self, run: Callable[..., Any], table: str, column: str, sums: dict[SumsKey, SlotSums]
    ) -> None:
        """Add ``sums``, keyed (site, ``column``, slot, bucket), to the stored sums of
        ``table`` (bucket_sums by day, increment_sums by seq): one read and one upsert per
        100 buckets."""
        by_part: dict[tuple[str, int], list[SumsKey]] = {}
        for key in sums:
            by_part.setdefault(key[:2], []).append(key)
        for (site, part), keys in by_part.items():
            for chunk in _chunks(keys):
                buckets = sorted({bucket for *_, bucket in chunk})
                stored = run(
                    f"SELECT slot, bucket, sums FROM {table} WHERE site = ? AND {column} = ? "
                    f"AND bucket IN ({', '.join('?' * len(buckets))})",
                    (site, part, *buckets),
                ).fetchall()
                for slot, bucket, text in stored:
                    key = (site, part, slot, int(bucket))
                    if key in sums:
                        sums[key].add(SlotSums.from_json(text))
                run(
                    f"INSERT INTO {table} (site, {column}, slot, bucket, sums) VALUES "
                    f"{_rows(len(chunk), 5)} ON CONFLICT (site, {column}, slot, bucket) "
                    "DO UPDATE SET sums = excluded.sums",
                    [value for key in chunk for value in (*key, sums[key].to_json())],
                )

    def upload_count(self, site: str) -> int:
        with self._transaction(write=False) as run:
            row = run("SELECT COUNT(*) FROM uploads WHERE site = ?", (site,)).fetchone()
        return int(row[0])

    def list_uploads(
        self, site: str, *, since: float = 0.0, until: float = 1e11, limit: int = 100
    ) -> list[StoredUpload]:
        """Uploads received in ``[since, until)``, oldest first."""
        with self._transaction(write=False) as run:
            rows = run(
                "SELECT batch_id, received_at, bucket, body FROM uploads WHERE site = ? "
                "AND received_at >= ? AND received_at < ? ORDER BY received_at, batch_id LIMIT ?",
                (site, since, until, limit),
            ).fetchall()
        return [
            StoredUpload(b, float(t), int(k), sorted(json.loads(body)["slots"]))
            for b, t, k, body in rows
        ]

    def purge(
        self,
        site: str,
        *,
        since: float | None = None,
        until: float | None = None,
        batch_ids: Sequence[str] | None = None,
        now: float | None = None,
    ) -> int:
        """Delete the uploads received in ``[since, until)`` (and/or with one of ``batch_ids``),
        rebuild the site's sums from the rest; return how many were deleted."""
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            deleted: list[float] = []  # receive times: which released increments they were in
            if since is not None or until is not None:
                deleted += self._delete_uploads(
                    run,
                    "site = ? AND received_at >= ? AND received_at < ?",
                    (site, 0.0 if since is None else since, 1e11 if until is None else until),
                )
            for batch_id in batch_ids or ():
                deleted += self._delete_uploads(run, "site = ? AND batch_id = ?", (site, batch_id))
            self._unrelease(run, site, deleted)
            self._rebuild(run, site, now)
        return len(deleted)

    @staticmethod
    def _delete_uploads(run: Callable[..., Any], where: str, params: Sequence[Any]) -> list[float]:
        """Delete the uploads ``where``; return their receive times."""
        rows = run(f"DELETE FROM uploads WHERE {where} RETURNING received_at", params).fetchall()
        return [float(t) for (t,) in rows]

    @staticmethod
    def _unrelease(run: Callable[..., Any], site: str, deleted: Sequence[float]) -> None:
        """Mark the released increments that held deleted uploads for re-release: the next
        publication releases what is left of them with fresh noise (their sums are rebuilt from
        the uploads left, :meth:`_rebuild`), or drops them if nothing is left, so no published
        sum keeps a deleted upload. That costs the other visitors of a
        re-released increment another ``rho_release`` (docs/sync-protocol.md section 5)."""
        if not deleted:
            return
        windows = run(
            "SELECT seq, since, until FROM released_increments WHERE site = ? AND until >= ? "
            "AND since < ?",
            (site, min(deleted), max(deleted)),
        ).fetchall()
        touched = [
            int(seq) for seq, since, until in windows if any(since < t <= until for t in deleted)
        ]
        for chunk in _chunks(touched):
            run(
                "UPDATE released_increments SET counts = NULL WHERE site = ? "
                f"AND seq IN ({', '.join('?' * len(chunk))})",
                (site, *chunk),
            )

    def rebuild(self, site: str, *, now: float | None = None) -> int:
        """Recompute the site's sums from its stored uploads; return their number."""
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            return self._rebuild(run, site, now)

    def _rebuild(self, run: Callable[..., Any], site: str, now: float) -> int:
        """The bucket sums of every day and the running sums of the increments not yet
        released, from the stored uploads; a publication that read sums before does not
        store what it drew from them (``rebuilds``)."""
        days, increments, count = self._sums_of_uploads(run, site)
        run("DELETE FROM bucket_sums WHERE site = ?", (site,))
        self._merge_sums(run, "bucket_sums", "day", days)
        self._replace_increment_sums(run, site, increments)
        run(
            "UPDATE sites SET aggregated_at = ?, rebuilds = rebuilds + 1, sums_max_shown = ? "
            "WHERE site = ?",
            (now, self.max_shown, site),
        )
        return count

    def match_bound(self, *, now: float | None = None) -> list[str]:
        """Rebuild the running sums of every site whose sums were scaled to another bound
        (a server restarted with a new ``max_shown``, or a store from before the bound was
        recorded); return those sites.

        Each unreleased upload is projected again onto one visitor's ball under this bound, so
        the next release's noise, calibrated from this bound, covers every upload in it: a
        lower bound would otherwise release sums of larger visitors with too little noise.
        Every instance of one store must run with the same bound.
        """
        now = time.time() if now is None else now
        with self._transaction(write=False) as run:
            stale = run(
                "SELECT site FROM sites WHERE sums_max_shown IS NULL OR sums_max_shown <> ? "
                "ORDER BY site",
                (self.max_shown,),
            ).fetchall()
        for (site,) in stale:
            with self._transaction(site) as run:
                self._rebuild(run, site, now)
        return [site for (site,) in stale]

    def _replace_increment_sums(
        self, run: Callable[..., Any], site: str, sums: dict[SumsKey, SlotSums]
    ) -> None:
        run("DELETE FROM increment_sums WHERE site = ?", (site,))
        self._merge_sums(run, "increment_sums", "seq", sums)

    def _sums_of_uploads(
        self, run: Callable[..., Any], site: str
    ) -> tuple[dict[SumsKey, SlotSums], dict[SumsKey, SlotSums], int]:
        """The site's bucket sums by day and by increment not yet released, from its stored
        uploads, and their number."""
        windows = self._unreleased_windows(run, site)
        rows = run(
            "SELECT received_at, bucket, body FROM uploads WHERE site = ? "
            "ORDER BY received_at, batch_id",
            (site,),
        ).fetchall()
        days: dict[SumsKey, SlotSums] = {}
        increments: dict[SumsKey, SlotSums] = {}
        for received_at, bucket, body in rows:
            t = float(received_at)
            seq = next((q for q, since, until in windows if since < t <= until), None)
            upload = Upload.model_validate_json(body)
            self._sum_into(days, increments, Received(site, upload, int(bucket), t), seq)
        return days, increments, len(rows)

    @staticmethod
    def _unreleased_windows(run: Callable[..., Any], site: str) -> list[Window]:
        """The increments waiting to be (re-)released, then the open one."""
        pending = run(
            "SELECT seq, since, until FROM released_increments WHERE site = ? "
            "AND counts IS NULL ORDER BY seq",
            (site,),
        ).fetchall()
        open_seq, released_until = run(
            "SELECT open_seq, released_until FROM sites WHERE site = ?", (site,)
        ).fetchone()
        return [(int(q), float(a), float(b)) for q, a, b in pending] + [
            (int(open_seq), float(released_until), math.inf)
        ]

    def bucket_rows(self, site: str, *, since_day: int = 0) -> list[BucketRow]:
        with self._transaction(write=False) as run:
            return self._bucket_rows(run, site, since_day)

    def _bucket_rows(self, run: Callable[..., Any], site: str, since_day: int) -> list[BucketRow]:
        rows = run(
            "SELECT day, slot, bucket, sums FROM bucket_sums WHERE site = ? AND day >= ?",
            (site, since_day),
        ).fetchall()
        return parse_bucket_rows(rows)

    # -- published priors -------------------------------------------------------------------

    def site_state(self, site: str) -> SiteState:
        with self._transaction(write=False) as run:
            return _state(run(STATE_QUERY, (site,)).fetchone())

    def publish(
        self,
        site: str,
        release: Release,
        build: Callable[[int, list[Increment]], dict[str, Any]],
        *,
        note: str,
        keep: int,
        horizon: float = 0.0,
        min_interval_s: float | None = None,
        now: float | None = None,
    ) -> int | None:
        """Release the uploads received since the last release as one noisy increment, and
        publish a new prior version built from every released increment; return its number.

        First the open increment is cut (a short write: later uploads go to the next one);
        then ``release`` noises the running sums of each increment waiting to be released
        (once: the result is stored and every later publication reuses it), the cut one and
        any a purge sent back, which are dropped if no upload of theirs is left. ``build``
        makes the document from the released increments that end after ``horizon``; older
        ones weigh nothing after decay and are deleted.

        Returns None with ``min_interval_s`` (automatic publishing) when the site is frozen,
        nothing changed since the last publication, or the last publication or cut is younger
        than ``min_interval_s``. Returns None, and publishes nothing, when another instance
        published or a purge rebuilt the sums meanwhile (the noise drawn is discarded
        unpublished, which costs no privacy). If ``release``, ``build`` or the serialization
        fails, the error propagates and nothing is published or released; the increment cut
        waits for the next publication. Only the ``keep`` newest versions (and the one served)
        are kept.

        The sums are read and the document built outside the write lock, so uploads are never
        held up by a publication; the final write checks that nothing changed between.
        """
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            state = _state(run(STATE_QUERY, (site,)).fetchone())
            if not self._may_publish(state, now, min_interval_s):
                return None
            self._cut(run, site, state, now)
        with self._transaction(write=False) as run:
            last = run("SELECT MAX(version) FROM priors WHERE site = ?", (site,)).fetchone()[0]
            stored = self._increments(run, site, horizon)
            pending = [i for i in stored if i.counts is None]
            sums = self._increment_rows(run, site, [i.seq for i in pending])
            rebuilds = self._rebuilds(run, site)
        fresh: list[Increment] = []
        for increment in pending:
            if rows := sums.get(increment.seq):
                noised = release(rows)
                fresh.append(
                    replace(
                        increment,
                        sigma=noised.sigma,
                        counts=noised.counts,
                        local_noise=noised.local_noise,
                    )
                )
        released = sorted([i for i in stored if i.counts is not None] + fresh, key=lambda i: i.seq)
        version = int(last or 0) + 1
        body = dumps(build(version, released))
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        with self._transaction(site) as run:
            state_now = _state(run(STATE_QUERY, (site,)).fetchone())
            latest = run("SELECT MAX(version) FROM priors WHERE site = ?", (site,)).fetchone()[0]
            if (
                latest != last
                or (min_interval_s is not None and state_now.frozen)
                or self._pending_seqs(run, site, horizon) != [i.seq for i in pending]
                or self._rebuilds(run, site) != rebuilds
            ):
                return None
            self._store_increments(run, site, pending, fresh, now)
            run(  # beyond the horizon an increment weighs nothing: no need to keep it
                "DELETE FROM increment_sums WHERE site = ? AND seq IN (SELECT seq FROM "
                "released_increments WHERE site = ? AND until <= ?)",
                (site, site, horizon),
            )
            run("DELETE FROM released_increments WHERE site = ? AND until <= ?", (site, horizon))
            run(
                "INSERT INTO priors (site, version, body, etag, published_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (site, version, body, etag, now, note),
            )
            run(
                "UPDATE sites SET current_version = ?, published_at = ? WHERE site = ?",
                (version, now, site),
            )
            run(
                "DELETE FROM priors WHERE site = ? AND version <= ? AND version <> ?",
                (site, version - keep, version),
            )
        return version

    @staticmethod
    def _cut(run: Callable[..., Any], site: str, state: SiteState, now: float) -> None:
        """Close the open increment, if it holds any upload: it waits to be released (counts
        NULL), covers the uploads received in ``(released_until, until]`` with ``until`` at
        least ``now`` and the latest of them, and later uploads go to the next increment."""
        open_seq = int(run("SELECT open_seq FROM sites WHERE site = ?", (site,)).fetchone()[0])
        if not run(
            "SELECT 1 FROM increment_sums WHERE site = ? AND seq = ? LIMIT 1", (site, open_seq)
        ).fetchone():
            return
        latest = run(
            "SELECT received_at FROM uploads WHERE site = ? AND received_at > ? "
            "ORDER BY received_at DESC LIMIT 1",
            (site, state.released_until),
        ).fetchone()
        until = max(now, state.released_until, float(latest[0]) if latest else now)
        run(
            "INSERT INTO released_increments (site, seq, since, until, sigma, counts, "
            "released_at) VALUES (?, ?, ?, ?, 0, NULL, ?)",
            (site, open_seq, state.released_until, until, now),
        )
        run(
            "UPDATE sites SET released_until = ?, open_seq = ? WHERE site = ?",
            (until, open_seq + 1, site),
        )

    @staticmethod
    def _increments(run: Callable[..., Any], site: str, horizon: float) -> list[Increment]:
        rows = run(
            "SELECT seq, since, until, sigma, counts, local_noise FROM released_increments "
            "WHERE site = ? AND until > ? ORDER BY seq",
            (site, horizon),
        ).fetchall()
        return [
            Increment(
                int(q),
                float(a),
                float(b),
                float(sd),
                Increment.parse_counts(c),
                Increment.parse_local_noise(local),
            )
            for q, a, b, sd, c, local in rows
        ]

    @staticmethod
    def _increment_rows(
        run: Callable[..., Any], site: str, seqs: Sequence[int]
    ) -> dict[int, list[BucketRow]]:
        """The running per-(slot, source bucket) sums of increments ``seqs`` (``day`` 0)."""
        stored: list[tuple[int, str, int, str]] = []
        for chunk in _chunks(seqs):
            stored += run(
                "SELECT seq, slot, bucket, sums FROM increment_sums WHERE site = ? "
                f"AND seq IN ({', '.join('?' * len(chunk))})",
                (site, *chunk),
            ).fetchall()
        by_seq: dict[int, list[tuple[int, str, int, str]]] = {}
        for seq, slot, bucket, text in stored:
            by_seq.setdefault(int(seq), []).append((0, slot, int(bucket), text))
        return {seq: parse_bucket_rows(rows) for seq, rows in by_seq.items()}

    @staticmethod
    def _rebuilds(run: Callable[..., Any], site: str) -> int:
        row = run("SELECT rebuilds FROM sites WHERE site = ?", (site,)).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _pending_seqs(run: Callable[..., Any], site: str, horizon: float) -> list[int]:
        rows = run(
            "SELECT seq FROM released_increments WHERE site = ? AND until > ? "
            "AND counts IS NULL ORDER BY seq",
            (site, horizon),
        ).fetchall()
        return [int(seq) for (seq,) in rows]

    @staticmethod
    def _store_increments(
        run: Callable[..., Any],
        site: str,
        pending: Sequence[Increment],
        fresh: Sequence[Increment],
        now: float,
    ) -> None:
        """Store the fresh increments; pending ones with nothing left to release go; the
        running sums of both are no longer needed."""
        for increment in fresh:
            run(
                "UPDATE released_increments SET sigma = ?, counts = ?, local_noise = ?, "
                "released_at = ? WHERE site = ? AND seq = ?",
                (
                    increment.sigma,
                    increment.counts_json(),
                    increment.local_noise_json(),
                    now,
                    site,
                    increment.seq,
                ),
            )
        released = {i.seq for i in fresh}
        for increment in pending:
            if increment.seq not in released:
                run(
                    "DELETE FROM released_increments WHERE site = ? AND seq = ?",
                    (site, increment.seq),
                )
        for chunk in _chunks([i.seq for i in pending]):
            marks = ", ".join("?" * len(chunk))
            run(f"DELETE FROM increment_sums WHERE site = ? AND seq IN ({marks})", (site, *chunk))

    def increments(self, site: str) -> list[Increment]:
        """Every stored increment of ``site`` (for tests and the admin)."""
        with self._transaction(write=False) as run:
            return self._increments(run, site, -1.0)

    @staticmethod
    def _may_publish(state: SiteState, now: float, min_interval_s: float | None) -> bool:
        """Automatic publishing (``min_interval_s``) waits for a change and the interval since
        the last publication and the last cut (another instance's publication in progress, or
        one that failed: it is retried once the interval has passed)."""
        return min_interval_s is None or not (
            state.frozen
            or state.aggregated_at <= state.published_at
            or (state.current_version is not None and now - state.published_at < min_interval_s)
            or now - state.released_until < min_interval_s  # another publication's cut
        )

    def serving(self, site: str) -> tuple[SiteState, Published | None]:
        """The site's state and the prior it serves now, in one read."""
        with self._transaction(write=False) as run:
            row = run(
                "SELECT s.current_version, s.frozen, s.aggregated_at, s.published_at, "
                "s.released_until, p.body, p.etag FROM sites s LEFT JOIN priors p "
                "ON p.site = s.site AND p.version = s.current_version WHERE s.site = ?",
                (site,),
            ).fetchone()
        if row is None:
            return SiteState(), None
        state = _state(row[:5])
        body, etag = row[5], row[6]
        return state, (None if body is None else Published(state.current_version, body, etag))

    def set_frozen(self, site: str, frozen: bool) -> None:
        with self._transaction(site) as run:
            run("UPDATE sites SET frozen = ? WHERE site = ?", (int(frozen), site))

    def rollback(self, site: str, version: int, *, now: float | None = None) -> int | None:
        """Serve ``version`` again, freeze the site, and delete the uploads received after that
        version was published (what is being rolled back), so that unfreezing does not bring
        them back; return how many were deleted, or None if there is no such version."""
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            found = run(
                "SELECT published_at FROM priors WHERE site = ? AND version = ?", (site, version)
            ).fetchone()
            if not found:
                return None
            purged = self._delete_uploads(
                run, "site = ? AND received_at > ?", (site, float(found[0]))
            )
            self._unrelease(run, site, purged)
            self._rebuild(run, site, now)
            run(
                "UPDATE sites SET current_version = ?, frozen = 1, published_at = ? WHERE site = ?",
                (version, now, site),
            )
        return len(purged)

    def versions(self, site: str) -> list[dict[str, Any]]:
        with self._transaction(write=False) as run:
            rows = run(
                "SELECT version, etag, published_at, note FROM priors WHERE site = ? "
                "ORDER BY version",
                (site,),
            ).fetchall()
        return [
            {"version": int(v), "etag": e, "published_at": float(t), "note": note}
            for v, e, t, note in rows
        ]
