"""Serving hygiene of the sync API as ASGI middleware, whatever framework the API is written in.

:func:`harden` adds to a Starlette (or FastAPI) app, outermost first:

1. ``ProxyHeadersMiddleware`` (uvicorn's), only with ``--trusted-proxy``: when the direct peer is
   a trusted proxy, the client is the right-most untrusted address of ``X-Forwarded-For``;
   otherwise the header is ignored (uvicorn's own, loopback-trusting default is switched off in
   :mod:`.serving`).
2. :class:`SecurityHeaders`: ``nosniff`` on every API response; on ``/report`` a strict CSP
   (no script at all, inline styles only by hash) with ``frame-ancestors 'none'`` and
   ``X-Frame-Options: DENY``.
3. :class:`.ratelimit.RateLimitMiddleware`: refused before a body is even read.
4. :class:`BodyGuard`: a body arrives within ``body_timeout_s`` (408 and the connection closed
   otherwise, so slow-body clients cannot hold connections), within ``max_body_bytes`` for an
   upload and 1 MiB for any other body (413),
   and an API body is JSON the server can digest (400 ``{"error", "field"}`` otherwise,
   see :mod:`.safejson`) before the app parses it again.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable

import anyio
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from .config import SyncSettings
from .errors import send_error
from .ratelimit import RateLimitMiddleware, SharedBuckets
from .safejson import UnsafeJSON, loads

__all__ = ["BodyGuard", "SecurityHeaders", "harden"]

REPORT_PATH = "/report"
MAX_BUFFERED_BYTES = 1 << 20  # no endpoint takes more (uploads: settings.max_body_bytes)
NOSNIFF = [(b"x-content-type-options", b"nosniff")]
STYLE = re.compile(rb"<style>(.*?)</style>", re.DOTALL)


def harden(app: Starlette, settings: SyncSettings, buckets: SharedBuckets | None = None) -> None:
    """Add the hygiene middleware, configured by ``settings.limits``, around ``app``'s routes
    (rate limits in ``buckets``, the app's shared store, or a store of their own)."""
    limits = settings.limits
    # add_middleware wraps what was added before: the last one added runs first
    app.add_middleware(
        BodyGuard, timeout_s=limits.body_timeout_s, upload_max_bytes=settings.max_body_bytes
    )
    app.add_middleware(RateLimitMiddleware, settings=settings, buckets=buckets)
    app.add_middleware(SecurityHeaders)
    if limits.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(limits.trusted_proxies))


def is_api(path: str) -> bool:
    return path.startswith("/v1/") or path in ("/openapi.json", REPORT_PATH)


class SecurityHeaders:
    """Headers that keep browsers from sniffing API bodies or framing the report."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_api(path):
            await self.app(scope, receive, send)
        elif path == REPORT_PATH:
            await self.app(scope, receive, _report_headers(send))
        else:

            async def send_nosniff(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = message.setdefault("headers", [])
                    if not any(name == NOSNIFF[0][0] for name, _ in headers):
                        message["headers"] = [*headers, *NOSNIFF]
                await send(message)

            await self.app(scope, receive, send_nosniff)


def _with(headers: list, extra: list[tuple[bytes, bytes]]) -> list:
    """``headers`` with ``extra`` replacing any header of the same name."""
    names = {name for name, _ in extra}
    return [(n, v) for n, v in headers if n.lower() not in names] + extra


def report_policy(html: bytes) -> bytes:
    """A CSP allowing nothing but this page's own inline ``<style>`` blocks (by hash)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(css).digest()).decode() + "'"
        for css in STYLE.findall(html)
    )
    styles = hashes or "'none'"
    return (
        f"default-src 'none'; style-src {styles}; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ).encode()


def _report_headers(send: Send) -> Callable[[Message], Awaitable[None]]:
    """Hold the report's head until its (small) body is complete, then add the CSP by hash."""
    held: list[Message] = []

    async def send_with_policy(message: Message) -> None:
        if message["type"] == "http.response.start":
            held.append(message)
            return
        if message["type"] != "http.response.body" or not held:
            await send(message)
            return
        held.append(message)
        if message.get("more_body", False):
            return
        start, *chunks = held
        held.clear()
        html = b"".join(chunk.get("body", b"") for chunk in chunks)
        start["headers"] = _with(
            start.get("headers", []),
            [
                *NOSNIFF,
                (b"content-security-policy", report_policy(html)),
                (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"no-referrer"),
            ],
        )
        await send(start)
        await send({"type": "http.response.body", "body": html})

    return send_with_policy


class BodyTimeout(Exception):
    """The client did not send its whole body in time."""


class BodyTooLarge(Exception):
    """The body is larger than the server accepts."""


class ClientGone(Exception):
    """The client disconnected before its body was complete: there is no one to answer."""


class BodyGuard:
    """Read every request body up front, within a deadline and a size limit; vet API JSON."""

    def __init__(self, app: ASGIApp, *, timeout_s: float, upload_max_bytes: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.upload_max_bytes = upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        is_upload = path.startswith("/v1/sites/") and path.endswith("/uploads")
        limit = self.upload_max_bytes if is_upload else MAX_BUFFERED_BYTES
        try:
            body = await self._read(receive, limit)
        except BodyTimeout:
            await send_error(
                send,
                408,
                f"the request body did not arrive within {self.timeout_s:g} s",
                "body",
                (b"connection", b"close"),
            )
            return
        except ClientGone:
            return
        except BodyTooLarge:
            await send_error(send, 413, f"the body exceeds {limit} bytes", "body")
            return
        if body and path.startswith("/v1/"):
            try:
                loads(body)
            except UnsafeJSON as exc:
                await send_error(send, exc.status, str(exc), exc.field)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.timeout_s) as scope:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if scope.cancelled_caught:
            raise BodyTimeout
        return b"".join(chunks)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
