"""Who may do what: upload keys, the admin token, per-client rate limits, body size limits,
and the source bucket of a client (protocol section 4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from starlette.requests import Request

__all__ = [
    "RateLimiter",
    "is_admin",
    "key_matches",
    "read_limited",
    "BodyTooLarge",
    "client_address",
    "source_bucket",
    "SOURCE_BUCKETS",
]

SOURCE_BUCKETS = 4096


def client_address(request: Request) -> str:
    """The client's address as the ASGI server (or a trusted-proxy middleware) set it."""
    return request.client.host if request.client else "unknown"


def source_bucket(day_secret: bytes, address: str) -> int:
    """``HMAC(day secret, address) mod 4096``: one source for robust aggregation, which cannot
    be traced back to the address once the day's secret is deleted."""
    digest = hmac.new(day_secret, address.encode("utf-8", "replace"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % SOURCE_BUCKETS


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of an upload key."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_admin(request: Request, token: str | None) -> bool:
    """``Authorization: Bearer <token>``, or HTTP Basic with the token as password."""
    if not token:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return key_matches(value.strip(), token)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return key_matches(decoded.partition(":")[2], token)
    return False


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, or :class:`BodyTooLarge` as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class RateLimiter:
    """Token buckets per client (``rate`` per second, bursts of ``burst``), in memory."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000):
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float | None = None) -> float:
        """0 if the request may go on, else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_clients and client not in self._buckets:
            self._buckets.clear()  # crude but bounded: forget everyone rather than grow
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens - 1.0, now)
        return 0.0
