"""``/v1/health``: is the store really usable, not just reachable?

A ``SELECT`` succeeds on a read-only, full or half-corrupted database, so the check writes: on a
fresh connection (what the next request would get), in one transaction, it upserts a heartbeat
row and commits. A corrupted file, a read-only file, file system or replica, a full disk, or a
store that cannot be opened gives 503 with the reason, and so does a schema that is not at the
latest migration. A heartbeat can still succeed on a full disk (SQLite rewrites its WAL in place
once it has grown), while the next uploads need new space; so for SQLite the check also wants
``MIN_FREE_BYTES`` free on the database's file system. Since ``/v1/health`` is public,
:class:`HealthCheck` writes at most once a second per process: a flood of probes cannot turn
into a flood of commits.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass

from .migrations import LATEST
from .storage import Storage

__all__ = ["Health", "HealthCheck", "check_health", "store_problem"]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS health_heartbeat "
    "(id INTEGER PRIMARY KEY, checked_at DOUBLE PRECISION NOT NULL)"
)
_BEAT = (
    "INSERT INTO health_heartbeat (id, checked_at) VALUES (1, {p}) "
    "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
)
TIMEOUT_S = 5  # waiting for the write lock or a connection longer than this is a problem too
MIN_FREE_BYTES = 16 << 20  # SQLite: less free space than this on its file system is "full"


@dataclass(frozen=True, slots=True)
class Health:
    """What ``/v1/health`` answers (503 unless ``status`` is ``"ok"``)."""

    status: str  # "ok", "store not writable" or "migrations pending"
    storage: str  # "sqlite" or "postgresql"
    schema_version: int | None
    reason: str | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.status == "ok" else 503

    def body(self) -> dict[str, str | int | None]:
        """The JSON body: ``reason`` only when something is wrong."""
        body = {
            "status": self.status,
            "storage": self.storage,
            "schema_version": self.schema_version,
        }
        return body if self.reason is None else {**body, "reason": self.reason}


def _write_sqlite(storage: Storage) -> None:
    # mode=rw: a missing file is a problem, not a new empty database
    conn = sqlite3.connect(
        f"file:{storage.path}?mode=rw", uri=True, timeout=TIMEOUT_S, isolation_level=None
    )
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_CREATE)
        conn.execute(_BEAT.format(p="?"), (time.time(),))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _write_postgresql(storage: Storage) -> None:
    import psycopg

    with psycopg.connect(storage.url, connect_timeout=TIMEOUT_S) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('health_heartbeat'))")
        conn.execute(_CREATE)
        conn.execute(_BEAT.format(p="%s"), (time.time(),))


def store_problem(storage: Storage, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """None if a transaction on a fresh connection can write and commit (and, for SQLite, its
    file system has ``min_free_bytes`` free), else why not."""
    try:
        if storage.dialect == "sqlite":
            _write_sqlite(storage)
            free = shutil.disk_usage(storage.path.parent).free
            if free < min_free_bytes:
                return (
                    f"the disk is full: {free} bytes free on {storage.path.parent}, "
                    f"expected at least {min_free_bytes}"
                )
        else:
            _write_postgresql(storage)
    except Exception as exc:  # every failure of the store is the answer, not an error
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def check_health(storage: Storage, min_free_bytes: int = MIN_FREE_BYTES) -> Health:
    """The store's health: writable first, then at the latest schema version."""
    problem = store_problem(storage, min_free_bytes)
    if problem is not None:
        return Health("store not writable", storage.dialect, None, problem)
    version = storage.schema_version()
    if version != LATEST:
        return Health(
            "migrations pending", storage.dialect, version, f"schema {version}, expected {LATEST}"
        )
    return Health("ok", storage.dialect, version)


class HealthCheck:
    """:func:`check_health` at most once per ``every_s``; callers in between share the answer."""

    def __init__(self, storage: Storage, every_s: float = 1.0) -> None:
        self.storage = storage
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: tuple[float, Health] | None = None

    def __call__(self) -> Health:
        with self._lock:  # concurrent probes wait for one check instead of each writing
            now = time.monotonic()
            if self._last is None or now - self._last[0] >= self.every_s:
                self._last = (now, check_health(self.storage))
            return self._last[1]
