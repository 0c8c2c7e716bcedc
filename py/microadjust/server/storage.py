"""Durable state of the sync server: SQLite in a data directory, or PostgreSQL.

What is kept (protocol section 4): each accepted upload as received (no identifier) with its
receive time, batch id and source bucket; per site, UTC day, slot and source bucket the sum of
those uploads (the admin's report reads it; rebuilt from the uploads after a purge); the noisy
increments released so far (:mod:`.release`: each upload is noised once, in the increment of
the first publication after it arrived, and that increment is reused by every later
publication); the declared sites changed through the admin API; published prior versions (the
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

from .aggregate import BucketRow, SlotSums, parse_bucket_rows, upload_sums
from .migrations import LATEST, MIGRATIONS
from .models import SiteDeclaration, Upload
from .release import CountsTable, Increment

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
    released_until: float = 0.0  # uploads received up to this are in a released increment


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


SumsKey = tuple[str, int, str, int]  # site, day, slot, source bucket
# the uploads of one increment, (source bucket, upload) each -> its noisy counts and their sigma
Release = Callable[[list[tuple[int, Upload]]], tuple[CountsTable, float]]
WindowMark = tuple[int, float | None]  # an increment window's uploads: count, latest receive time
ROWS_PER_STATEMENT = 100  # rows of one multi-row statement (SQLite allows 32,766 parameters)
WAL_ATTEMPTS = 100  # 50 ms apart: a worker waits at most 5 s for another to switch to WAL


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
        max_shown: int = 4,
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
                    run("INSERT INTO sites (site) VALUES (?) ON CONFLICT DO NOTHING", (site,))
                yield run
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                for site in sorted(sites):
                    run("INSERT INTO sites (site) VALUES (?) ON CONFLICT DO NOTHING", (site,))
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
            batch = self._after_release(run, sites, batch)
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
            sums: dict[SumsKey, SlotSums] = {}
            aggregated_at: dict[str, float] = {}
            for received, new in zip(batch, stored, strict=True):
                if new:
                    self._sum_into(sums, received)
                    site = received.site
                    aggregated_at[site] = max(aggregated_at.get(site, 0.0), received.received_at)
            self._merge_into_buckets(run, sums)
            for site, at in aggregated_at.items():
                run("UPDATE sites SET aggregated_at = ? WHERE site = ?", (at, site))
        return stored

    def _after_release(
        self, run: Callable[..., Any], sites: Sequence[str], batch: Sequence[Received]
    ) -> list[Received]:
        """``batch`` with each receive time raised above its site's ``released_until``: an
        upload whose clock ran before a release it commits after belongs to the next increment,
        never to one already released (which would lose it)."""
        rows = run(
            f"SELECT site, released_until FROM sites WHERE site IN ({', '.join('?' * len(sites))})",
            tuple(sites),
        ).fetchall()
        released = {site: float(until) for site, until in rows}
        return [
            r if r.received_at > released.get(r.site, 0.0)
            else replace(r, received_at=math.nextafter(released[r.site], math.inf))
            for r in batch
        ]  # fmt: skip

    def _sum_into(self, sums: dict[SumsKey, SlotSums], received: Received) -> None:
        day = day_of(received.received_at)
        for slot, entry in received.upload.slots.items():
            key = (received.site, day, slot, received.bucket)
            sums.setdefault(key, SlotSums()).add(upload_sums(entry, self.max_shown))

    def _merge_into_buckets(self, run: Callable[..., Any], sums: dict[SumsKey, SlotSums]) -> None:
        """Add ``sums`` to the stored bucket sums: one read and one upsert per 100 buckets."""
        by_day: dict[tuple[str, int], list[SumsKey]] = {}
        for key in sums:
            by_day.setdefault(key[:2], []).append(key)
        for (site, day), keys in by_day.items():
            for chunk in _chunks(keys):
                buckets = sorted({bucket for *_, bucket in chunk})
                stored = run(
                    "SELECT slot, bucket, sums FROM bucket_sums WHERE site = ? AND day = ? "
                    f"AND bucket IN ({', '.join('?' * len(buckets))})",
                    (site, day, *buckets),
                ).fetchall()
                for slot, bucket, text in stored:
                    key = (site, day, slot, int(bucket))
                    if key in sums:
                        sums[key].add(SlotSums.from_json(text))
                run(
                    "INSERT INTO bucket_sums (site, day, slot, bucket, sums) VALUES "
                    f"{_rows(len(chunk), 5)} ON CONFLICT (site, day, slot, bucket) "
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
        publication releases what is left of them with fresh noise (or drops them if nothing
        is), so no published sum keeps a deleted upload. That costs the other visitors of a
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
        """Recompute the site's bucket sums from its stored uploads; return their number."""
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            return self._rebuild(run, site, now)

    def _rebuild(self, run: Callable[..., Any], site: str, now: float) -> int:
        run("DELETE FROM bucket_sums WHERE site = ?", (site,))
        rows = run(
            "SELECT received_at, bucket, body FROM uploads WHERE site = ? ORDER BY received_at",
            (site,),
        ).fetchall()
        sums: dict[SumsKey, SlotSums] = {}
        for received_at, bucket, body in rows:
            upload = Upload.model_validate_json(body)
            self._sum_into(sums, Received(site, upload, int(bucket), float(received_at)))
        self._merge_into_buckets(run, sums)
        run("UPDATE sites SET aggregated_at = ? WHERE site = ?", (now, site))
        return len(rows)

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

        ``release`` noises the uploads of one increment (once: the result is stored and every
        later publication reuses it); increments waiting for re-release after a purge are
        released too, or dropped if no upload of theirs is left. ``build`` makes the document
        from the released increments that end after ``horizon``; older ones weigh nothing
        after decay and are deleted.

        Returns None, and nothing changes, with ``min_interval_s`` (automatic publishing) when
        the site is frozen, nothing changed since the last publication, or the last one is
        younger than ``min_interval_s``; also when another instance published, or uploads of
        the increment were purged, meanwhile (its noise is then discarded unpublished, which
        costs no privacy). If ``release``, ``build`` or the serialization fails, nothing
        changes and the error propagates. Only the ``keep`` newest versions (and the one
        served) are kept.

        The uploads are read and the document built outside the write lock, so uploads are
        never held up by a publication; the write then checks that nothing changed between.
        """
        now = time.time() if now is None else now
        with self._transaction(write=False) as run:
            state = _state(run(STATE_QUERY, (site,)).fetchone())
            if not self._may_publish(state, now, min_interval_s):
                return None
            last = run("SELECT MAX(version) FROM priors WHERE site = ?", (site,)).fetchone()[0]
            stored = self._increments(run, site, horizon)
            pending = [i for i in stored if i.counts is None]
            windows = [(i.since, i.until) for i in pending]
            if now > state.released_until:
                windows.append((state.released_until, now))
            marks = [self._window_mark(run, site, *w) for w in windows]
            uploads = [self._window_uploads(run, site, *w) for w in windows]
            next_seq = 1 + int(
                run("SELECT COALESCE(MAX(seq), 0) FROM released_increments WHERE site = ?",
                    (site,)).fetchone()[0]
            )  # fmt: skip
        fresh: list[Increment] = []
        for i, rows in enumerate(uploads):
            if rows:
                counts, sigma = release(rows)
                seq = pending[i].seq if i < len(pending) else next_seq
                fresh.append(Increment(seq, *windows[i], sigma, counts))
        released = [i for i in stored if i.counts is not None] + fresh
        version = int(last or 0) + 1
        body = dumps(build(version, released))
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        with self._transaction(site) as run:
            state_now = _state(run(STATE_QUERY, (site,)).fetchone())
            latest = run("SELECT MAX(version) FROM priors WHERE site = ?", (site,)).fetchone()[0]
            if (
                not self._may_publish(state_now, now, min_interval_s)
                or latest != last
                or state_now.released_until != state.released_until
                or [self._window_mark(run, site, *w) for w in windows] != marks
                or self._pending_seqs(run, site, horizon) != [i.seq for i in pending]
            ):
                return None
            self._store_increments(run, site, pending, fresh, now)
            run(  # beyond the horizon an increment weighs nothing: no need to keep it
                "DELETE FROM released_increments WHERE site = ? AND until <= ?", (site, horizon)
            )
            run(
                "INSERT INTO priors (site, version, body, etag, published_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (site, version, body, etag, now, note),
            )
            run(
                "UPDATE sites SET current_version = ?, published_at = ?, released_until = ? "
                "WHERE site = ?",
                (version, now, max(now, state.released_until), site),
            )
            run(
                "DELETE FROM priors WHERE site = ? AND version <= ? AND version <> ?",
                (site, version - keep, version),
            )
        return version

    @staticmethod
    def _increments(run: Callable[..., Any], site: str, horizon: float) -> list[Increment]:
        rows = run(
            "SELECT seq, since, until, sigma, counts FROM released_increments "
            "WHERE site = ? AND until > ? ORDER BY seq",
            (site, horizon),
        ).fetchall()
        return [
            Increment(int(q), float(a), float(b), float(sd), Increment.parse_counts(c))
            for q, a, b, sd, c in rows
        ]

    @staticmethod
    def _pending_seqs(run: Callable[..., Any], site: str, horizon: float) -> list[int]:
        rows = run(
            "SELECT seq FROM released_increments WHERE site = ? AND until > ? "
            "AND counts IS NULL ORDER BY seq",
            (site, horizon),
        ).fetchall()
        return [int(seq) for (seq,) in rows]

    @staticmethod
    def _window_mark(run: Callable[..., Any], site: str, since: float, until: float) -> WindowMark:
        count, latest = run(
            "SELECT COUNT(*), MAX(received_at) FROM uploads WHERE site = ? AND received_at > ? "
            "AND received_at <= ?",
            (site, since, until),
        ).fetchone()
        return int(count), None if latest is None else float(latest)

    @staticmethod
    def _window_uploads(
        run: Callable[..., Any], site: str, since: float, until: float
    ) -> list[tuple[int, Upload]]:
        rows = run(
            "SELECT bucket, body FROM uploads WHERE site = ? AND received_at > ? "
            "AND received_at <= ? ORDER BY received_at, batch_id",
            (site, since, until),
        ).fetchall()
        return [(int(bucket), Upload.model_validate_json(body)) for bucket, body in rows]

    @staticmethod
    def _store_increments(
        run: Callable[..., Any],
        site: str,
        pending: Sequence[Increment],
        fresh: Sequence[Increment],
        now: float,
    ) -> None:
        """Store the fresh increments; pending ones with nothing left to release go."""
        for increment in fresh:
            run(
                "INSERT INTO released_increments (site, seq, since, until, sigma, counts, "
                "released_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, seq) DO UPDATE "
                "SET sigma = excluded.sigma, counts = excluded.counts, "
                "released_at = excluded.released_at",
                (site, increment.seq, increment.since, increment.until, increment.sigma,
                 increment.counts_json(), now),
            )  # fmt: skip
        released = {i.seq for i in fresh}
        for increment in pending:
            if increment.seq not in released:
                run(
                    "DELETE FROM released_increments WHERE site = ? AND seq = ?",
                    (site, increment.seq),
                )

    def increments(self, site: str) -> list[Increment]:
        """Every stored increment of ``site`` (for tests and the admin)."""
        with self._transaction(write=False) as run:
            return self._increments(run, site, -1.0)

    @staticmethod
    def _may_publish(state: SiteState, now: float, min_interval_s: float | None) -> bool:
        """Automatic publishing (``min_interval_s``) waits for a change and the interval."""
        return min_interval_s is None or not (
            state.frozen
            or state.aggregated_at <= state.published_at
            or (state.current_version is not None and now - state.published_at < min_interval_s)
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
