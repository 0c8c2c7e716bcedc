"""Rate limits per client address, per site and on the admin API, shared by all instances.

The upload key is public, so the limits that matter for poisoning and flooding (uploads per
client address, uploads per site, admin requests per address) are kept in PostgreSQL when the
server has ``database_url``: every instance behind a load balancer draws from the same token
buckets, with one atomic upsert per bucket and PostgreSQL's clock (the table is created by
migration 3, :mod:`.migrations`). The requests that arrive together are checked together: their
statements go to PostgreSQL in one pipeline, one round trip for all of them, each statement as
exact as one request alone. Without a shared database the buckets live in memory. Priors stay
limited in memory per instance: they are the hot path, identical for every client, and meant to
be cached by a CDN anyway. The same store holds each site's upload budget
(``SyncSettings.upload_budget``), which the upload handler takes from only once an upload has
passed validation, so that invalid uploads cannot spend it.

The client address is ``scope["client"]``, which :mod:`.hygiene` rewrites from
``X-Forwarded-For`` only when the direct peer is a trusted proxy. IPv6 clients are limited per
/64, the block one subscriber usually gets.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from .config import SyncSettings
from .errors import send_error
from .groupcommit import GroupCommit
from .limits import RateRule
from .security import RateLimiter

__all__ = [
    "BucketStore",
    "MemoryBuckets",
    "PostgresBuckets",
    "RateLimitMiddleware",
    "SharedBuckets",
    "StoreUnavailable",
]


Wanted = Sequence[tuple[str, RateRule]]  # bucket names and their rules, in order
Refusal = tuple[int, float]  # which of the wanted buckets was empty, and seconds to wait


class BucketStore(Protocol):
    """Token buckets by name."""

    def take(self, wanted: Wanted) -> Refusal | None:
        """A token from each bucket in order, stopping at the first empty one."""

    def take_many(self, requests: Sequence[Wanted]) -> list[Refusal | None]:
        """:meth:`take` for each request, in order."""

    def close(self) -> None: ...


class MemoryBuckets:
    """Buckets of this process only (one :class:`.security.RateLimiter` per rule)."""

    def __init__(self) -> None:
        self._limiters: dict[RateRule, RateLimiter] = {}

    def take(self, wanted: Wanted) -> Refusal | None:
        for index, (bucket, rule) in enumerate(wanted):
            limiter = self._limiters.get(rule)
            if limiter is None:
                limiter = self._limiters[rule] = RateLimiter(rule.per_s, rule.burst)
            if wait := limiter.allow(bucket):
                return index, wait
        return None

    def take_many(self, requests: Sequence[Wanted]) -> list[Refusal | None]:
        return [self.take(wanted) for wanted in requests]

    def close(self) -> None:
        self._limiters.clear()


_REFILL = (
    "LEAST(%(burst{i})s, b.tokens + GREATEST(0, excluded.updated_at - b.updated_at) * %(rate{i})s)"
)
_UPSERT = f"""b{{i}} AS (
INSERT INTO rate_limit_buckets AS b (bucket, tokens, updated_at, allowed)
SELECT %(bucket{{i}})s, %(burst{{i}})s - 1.0, EXTRACT(EPOCH FROM clock_timestamp()), TRUE {{gate}}
ON CONFLICT (bucket) DO UPDATE SET
    allowed = {_REFILL} >= 1,
    tokens = {_REFILL} - CASE WHEN {_REFILL} >= 1 THEN 1 ELSE 0 END,
    updated_at = GREATEST(b.updated_at, excluded.updated_at)
RETURNING allowed, tokens)"""


@functools.cache
def _take_sql(count: int) -> str:
    """One statement taking from ``count`` buckets in order: bucket i is touched only when
    bucket i - 1 gave a token, so a refused client never drains a later (e.g. site) bucket."""
    upserts = [
        _UPSERT.format(i=i, gate=f"WHERE (SELECT allowed FROM b{i - 1})" if i else "")
        for i in range(count)
    ]
    results = ", ".join(
        f"(SELECT allowed FROM b{i}), (SELECT tokens FROM b{i})" for i in range(count)
    )
    return f"WITH {', '.join(upserts)} SELECT {results}"


_PRUNE = (
    "DELETE FROM rate_limit_buckets WHERE updated_at < EXTRACT(EPOCH FROM clock_timestamp()) - %s"
)


class PostgresBuckets:
    """Buckets in one PostgreSQL table, shared by every instance using the same database.

    Each request's take is one statement of upserts, atomic under concurrency (each row is
    locked by its conflict update), committed on its own. :meth:`take_many` sends many of them
    in one pipeline, each between its own ``BEGIN`` and ``COMMIT``: a pipeline is otherwise one
    implicit transaction up to its end, which held every bucket it had taken until then, so
    that two workers' pipelines taking a client's and a site's buckets and the site's upload
    budget in opposite orders deadlocked (a 1 s stall and a batch of 503s, measured under
    load). One take alone locks its buckets in a fixed order, so no cycle can form. The
    commits do not wait for the WAL to reach the disk (``synchronous_commit = off``): a
    database crash may forget the last fraction of a second of tokens, which is harmless,
    while waiting made every upload of a site queue behind the previous one's disk flush on
    the site's bucket row (about 300 uploads/s at most).
    A few connections per process serve every request (a connection per thread would multiply
    the server's connections to PostgreSQL). Idle buckets (a day without a request, long after
    any of them is full again) are deleted at most once a minute per process.
    """

    CONNECTIONS = 4
    WAIT_S = 10.0  # for a free connection
    IDLE_S = 86_400.0
    PRUNE_EVERY_S = 60.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        for _ in range(self.CONNECTIONS):
            self._pool.put(None)  # a slot, connected on first use
        self._pruned_at = 0.0

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute("SET synchronous_commit TO off")
        return conn

    def take(self, wanted: Wanted) -> Refusal | None:
        return self.take_many([wanted])[0]

    def take_many(self, requests: Sequence[Wanted]) -> list[Refusal | None]:
        conn = self._pool.get(timeout=self.WAIT_S)
        try:
            if conn is None or conn.broken:
                conn = None
                conn = self._connect()
            cursors = []
            with conn.pipeline():
                for wanted in requests:  # each take its own transaction (class docstring)
                    conn.execute("BEGIN")
                    cursors.append(conn.execute(_take_sql(len(wanted)), _take_params(wanted)))
                    conn.execute("COMMIT")
            rows = [cursor.fetchone() for cursor in cursors]
            now = time.monotonic()
            if now - self._pruned_at > self.PRUNE_EVERY_S:
                self._pruned_at = now
                conn.execute(_PRUNE, (self.IDLE_S,))
        except BaseException:
            if conn is not None:  # it may be left inside a take's transaction: never reuse it
                conn.close()
                conn = None
            raise
        finally:
            self._pool.put(conn)
        return [_refusal(wanted, row) for wanted, row in zip(requests, rows, strict=True)]

    def close(self) -> None:
        """Close the idle connections (all of them once requests are over); reusable after."""
        idle = []
        while True:
            try:
                idle.append(self._pool.get_nowait())
            except queue.Empty:
                break
        for conn in idle:
            if conn is not None:
                conn.close()
            self._pool.put(None)


def _take_params(wanted: Wanted) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, (bucket, rule) in enumerate(wanted):
        params |= {f"bucket{i}": bucket, f"rate{i}": rule.per_s, f"burst{i}": rule.burst}
    return params


def _refusal(wanted: Wanted, row: Sequence[Any]) -> Refusal | None:
    for i, (_, rule) in enumerate(wanted):
        allowed, tokens = row[2 * i], row[2 * i + 1]
        if not allowed:
            return i, (1.0 - tokens) / rule.per_s
    return None


def client_key(scope: Scope) -> str:
    """The address a limit applies to: the client's IPv4 address or its IPv6 /64."""
    return _address_key((scope.get("client") or ("unknown", 0))[0])


@functools.lru_cache(maxsize=65_536)  # parsing an address costs more than the rest of a check
def _address_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # e.g. a Unix socket or a test client
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


class StoreUnavailable(Exception):
    """The shared bucket store could not be reached: what it backs is unavailable too (503)."""


class SharedBuckets:
    """The buckets shared by every instance and worker: PostgreSQL when ``database_url`` is
    set, else this process's memory. One per app, used by the middleware (rates) and by the
    upload handler (the site's upload budget, taken after validation)."""

    def __init__(self, database_url: str | None) -> None:
        self.memory = MemoryBuckets()  # also the shared store without a database
        self.store: BucketStore = PostgresBuckets(database_url) if database_url else self.memory
        # a database round trip: off the event loop, and shared by the requests arriving together
        self._takes = GroupCommit(self.store.take_many) if database_url else None

    async def take(self, wanted: Wanted) -> Refusal | None:
        """:meth:`BucketStore.take` in the shared store; :class:`StoreUnavailable` if it fails."""
        if self._takes is None:
            return self.memory.take(wanted)
        try:
            return await self._takes.submit(wanted)
        except Exception as exc:
            raise StoreUnavailable(f"the rate limit store is unavailable: {exc}") from exc

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket a request draws from, and the words of its 429."""

    bucket: str
    rule: RateRule
    what: str  # "uploads from you": the 429 says "too many uploads from you"
    shared: bool = True  # in the shared store, else in this process's memory


class RateLimitMiddleware:
    """429 with ``Retry-After`` when a request's bucket is empty; other requests pass untouched."""

    def __init__(
        self, app: ASGIApp, settings: SyncSettings, buckets: SharedBuckets | None = None
    ) -> None:
        self.app = app
        self.settings = settings
        self.limits = settings.limits
        self.priors_rule = RateRule(settings.rate_per_s, settings.rate_burst)
        self.buckets = buckets or SharedBuckets(settings.database_url)

    def limits_of(self, scope: Scope) -> list[Limit]:
        """The buckets this request draws from, in order (a refusal stops the rest)."""
        path: str = scope["path"]
        client = client_key(scope)
        parts = path.split("/")
        if path.startswith("/v1/admin/") or path == "/report":
            return [Limit(f"admin:{client}", self.limits.admin_per_ip, "admin requests from you")]
        if len(parts) != 5 or parts[:3] != ["", "v1", "sites"]:
            return []
        site, endpoint = parts[3], parts[4]
        if endpoint == "priors" and scope["method"] in ("GET", "HEAD"):
            return [Limit(f"priors:{client}", self.priors_rule, "requests from you", shared=False)]
        if endpoint == "uploads" and scope["method"] == "POST":
            limits = [Limit(f"upload:{client}", self.limits.upload_per_ip, "uploads from you")]
            if site in self.settings.sites:  # unknown sites get 404 and no bucket of their own
                limits.append(
                    Limit(f"site:{site}", self.limits.upload_per_key, f"uploads to {site}")
                )
            return limits
        return []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:
                self.buckets.close()
            return
        if scope["type"] == "http":
            limits = self.limits_of(scope)
            wanted = [(limit.bucket, limit.rule) for limit in limits]
            refusal = None
            if limits and limits[0].shared:  # a request's buckets share one store
                try:
                    refusal = await self.buckets.take(wanted)
                except StoreUnavailable as exc:  # the database is down: so is all it backs
                    await send_error(send, 503, str(exc), None)
                    return
            elif limits:
                refusal = self.buckets.memory.take(wanted)
            if refusal is not None:
                index, wait = refusal
                await self._refuse(send, limits[index], wait)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send, limit: Limit, wait: float) -> None:
        retry = max(1, math.ceil(wait))
        await send_error(
            send,
            429,
            f"too many {limit.what}: at most {limit.rule.per_s:g}/s "
            f"(bursts of {limit.rule.burst}); retry in {retry} s",
            None,
            (b"retry-after", str(retry).encode()),
        )
