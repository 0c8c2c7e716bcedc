"""Durable state of the sync server: SQLite in a data directory, or PostgreSQL.

SQLite (the default) runs in WAL mode with ``synchronous=FULL``: an upload is acknowledged only
after its transaction is on disk, so a crash never loses an acknowledged batch. PostgreSQL
(``--database-url postgresql://...``) lets several server instances share one store; every
write that touches a site locks that site's row (``SELECT ... FOR UPDATE``), so merges from
different instances serialize. In both, a batch id is a primary key: a retried batch is
recognized and never counted twice, and the batch's merge happens in the same transaction as
its id is recorded.

The methods are synchronous (DB-API); the API calls them from a thread pool. Each thread has
its own connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import aggregate
from .migrations import LATEST, MIGRATIONS

__all__ = ["Storage", "Aggregate"]

Aggregate = tuple[dict[str, Any], int, float]  # data, uploads, updated_at


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


class Storage:
    """Uploads, per-slot aggregates, published prior versions and per-site state."""

    def __init__(self, *, data_dir: Path | None = None, database_url: str | None = None):
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
                conn.execute("PRAGMA journal_mode=WAL")
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
    def _transaction(
        self, site: str | None = None, *, write: bool = True
    ) -> Iterator[Callable[..., Any]]:
        """A transaction; with ``site``, that site's row exists and is locked until commit."""
        conn = self._connection()

        def run(sql: str, params: tuple[Any, ...] = ()) -> Any:
            return conn.execute(self._sql(sql), params)

        if self.dialect == "sqlite":
            # a writer takes SQLite's single write lock up front; readers never block (WAL)
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                if site is not None:
                    run("INSERT INTO sites (site) VALUES (?) ON CONFLICT DO NOTHING", (site,))
                yield run
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        else:
            with conn.transaction():
                if site is not None:
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

    # -- uploads --------------------------------------------------------------------------

    def record_upload(
        self,
        site: str,
        batch_id: str,
        upload: Mapping[str, Any],
        *,
        half_life_s: float,
        now: float | None = None,
    ) -> bool:
        """Store and merge one validated upload; False if this batch id was already stored.

        Raises :class:`aggregate.SchemaConflict` (and stores nothing) when a slot's feature
        space differs from what the slot has.
        """
        now = time.time() if now is None else now
        privacy = upload["privacy"]
        with self._transaction(site) as run:
            inserted = run(
                "INSERT INTO uploads (site, batch_id, received_at, events) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (site, batch_id, now, upload["events"]),
            ).rowcount
            if inserted != 1:
                return False
            for slot, contribution in upload["slots"].items():
                row = run(
                    "SELECT data, uploads, updated_at FROM aggregates WHERE site = ? AND slot = ?",
                    (site, slot),
                ).fetchone()
                data = json.loads(row[0]) if row else None
                elapsed = max(now - row[2], 0.0) if row else 0.0
                decay = 0.5 ** (elapsed / half_life_s) if half_life_s != float("inf") else 1.0
                merged = aggregate.merge(
                    data,
                    upload["schema"],
                    contribution,
                    privacy["sigma"],
                    privacy["ips_clip"],
                    decay,
                )
                run(
                    "INSERT INTO aggregates (site, slot, data, uploads, updated_at) "
                    "VALUES (?, ?, ?, 1, ?) ON CONFLICT (site, slot) DO UPDATE SET "
                    "data = excluded.data, uploads = aggregates.uploads + 1, "
                    "updated_at = excluded.updated_at",
                    (site, slot, _dumps(merged), now),
                )
            run("UPDATE sites SET aggregated_at = ? WHERE site = ?", (now, site))
        return True

    def upload_count(self, site: str) -> int:
        with self._transaction(write=False) as run:
            row = run("SELECT COUNT(*) FROM uploads WHERE site = ?", (site,)).fetchone()
        return int(row[0])

    def aggregates(self, site: str) -> dict[str, Aggregate]:
        """Every slot's aggregate of ``site``."""
        with self._transaction(write=False) as run:
            rows = run(
                "SELECT slot, data, uploads, updated_at FROM aggregates WHERE site = ? "
                "ORDER BY slot",
                (site,),
            ).fetchall()
        return {slot: (json.loads(data), int(n), float(t)) for slot, data, n, t in rows}

    # -- published priors -------------------------------------------------------------------

    def site_state(self, site: str) -> dict[str, Any]:
        with self._transaction(write=False) as run:
            row = run(
                "SELECT current_version, frozen, aggregated_at, published_at FROM sites "
                "WHERE site = ?",
                (site,),
            ).fetchone()
        if row is None:
            return {"current_version": None, "frozen": False, "aggregated_at": 0.0,
                    "published_at": 0.0}  # fmt: skip
        version, frozen, aggregated_at, published_at = row
        return {
            "current_version": version,
            "frozen": bool(frozen),
            "aggregated_at": float(aggregated_at),
            "published_at": float(published_at),
        }

    def publish(
        self,
        site: str,
        build: Callable[[int, dict[str, Aggregate]], dict[str, Any]],
        *,
        note: str,
        min_interval_s: float | None = None,
        now: float | None = None,
    ) -> int | None:
        """Publish a new prior version built from the aggregates; return its number.

        With ``min_interval_s`` (automatic publishing) nothing happens, and None is returned,
        when the site is frozen, nothing changed since the last publication, or the last one
        is younger than ``min_interval_s``.
        """
        now = time.time() if now is None else now
        with self._transaction(site) as run:
            current, frozen, aggregated_at, published_at = run(
                "SELECT current_version, frozen, aggregated_at, published_at FROM sites "
                "WHERE site = ?",
                (site,),
            ).fetchone()
            if min_interval_s is not None and (
                frozen
                or aggregated_at <= published_at
                or (current is not None and now - published_at < min_interval_s)
            ):
                return None
            rows = run(
                "SELECT slot, data, uploads, updated_at FROM aggregates WHERE site = ? "
                "ORDER BY slot",
                (site,),
            ).fetchall()
            aggs = {slot: (json.loads(data), int(n), float(t)) for slot, data, n, t in rows}
            last = run("SELECT MAX(version) FROM priors WHERE site = ?", (site,)).fetchone()[0]
            version = int(last or 0) + 1
            body = _dumps(build(version, aggs))
            etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
            run(
                "INSERT INTO priors (site, version, body, etag, published_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (site, version, body, etag, now, note),
            )
            run(
                "UPDATE sites SET current_version = ?, published_at = ? WHERE site = ?",
                (version, max(now, aggregated_at), site),
            )
        return version

    def serving(self, site: str) -> tuple[dict[str, Any], tuple[int, str, str] | None]:
        """The site's state and its current ``(version, body, etag)``, in one read."""
        with self._transaction(write=False) as run:
            row = run(
                "SELECT s.current_version, s.frozen, s.aggregated_at, s.published_at, p.body, "
                "p.etag FROM sites s LEFT JOIN priors p ON p.site = s.site "
                "AND p.version = s.current_version WHERE s.site = ?",
                (site,),
            ).fetchone()
        if row is None:
            return {"current_version": None, "frozen": False, "aggregated_at": 0.0,
                    "published_at": 0.0}, None  # fmt: skip
        version, frozen, aggregated_at, published_at, body, etag = row
        state = {
            "current_version": version,
            "frozen": bool(frozen),
            "aggregated_at": float(aggregated_at),
            "published_at": float(published_at),
        }
        return state, (None if body is None else (int(version), body, etag))

    def current_prior(self, site: str) -> tuple[int, str, str] | None:
        """``(version, body, etag)`` of the prior served now, or None."""
        with self._transaction(write=False) as run:
            row = run(
                "SELECT p.version, p.body, p.etag FROM sites s JOIN priors p "
                "ON p.site = s.site AND p.version = s.current_version WHERE s.site = ?",
                (site,),
            ).fetchone()
        return None if row is None else (int(row[0]), row[1], row[2])

    def set_frozen(self, site: str, frozen: bool) -> None:
        with self._transaction(site) as run:
            run("UPDATE sites SET frozen = ? WHERE site = ?", (int(frozen), site))

    def rollback(self, site: str, version: int) -> bool:
        """Serve ``version`` again and freeze the site; False if there is no such version."""
        with self._transaction(site) as run:
            found = run(
                "SELECT 1 FROM priors WHERE site = ? AND version = ?", (site, version)
            ).fetchone()
            if not found:
                return False
            run(
                "UPDATE sites SET current_version = ?, frozen = 1 WHERE site = ?",
                (version, site),
            )
        return True

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
