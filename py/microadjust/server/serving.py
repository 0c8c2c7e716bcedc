"""Run an ASGI app with uvicorn, configured so that slow or numerous clients cannot stall it.

- **Header deadline.** uvicorn closes idle keep-alive connections, but any byte received cancels
  that timer, and nothing bounds a connection that trickles its request head (slowloris) or
  its unread body after the response. The protocol classes here close a connection whose
  request head is not complete within ``header_timeout_s`` of its opening or of the previous
  response. (The body deadline is :class:`.hygiene.BodyGuard`'s: it answers 408.)
- **Bursts of new connections.** uvloop's libuv accepts one connection per listening handle
  and event-loop turn (libuv 1.45: "don't accept() connections in a loop"), and a turn that
  serves 200 busy connections lasts about 20 ms: 200 connections opened at once waited up to
  2 s to be accepted (measured on the wire under bench/load_sync.py, where it made p99s of
  0.4-1.2 s while every accepted request was answered within 50 ms). The listening socket is
  served through ``ACCEPTS_PER_TURN`` duplicated handles (:func:`accept_handles`), which
  accept up to that many a turn, few enough that several workers still share a burst.
- **Concurrency.** ``limit_concurrency`` answers 503 beyond ``max_concurrency`` connections or
  requests in flight, rather than letting them queue; ``backlog`` bounds the accept queue.
- **File descriptors.** The soft limit on open files is raised to the hard limit, so that a
  thousand held connections do not exhaust a default of 1,024 and block ``accept``.
- **Proxy headers off.** uvicorn believes ``X-Forwarded-For`` from loopback by default; here the
  header is believed only from ``--trusted-proxy`` networks (:func:`.hygiene.harden`).
- **Fast implementations when installed**: httptools for HTTP, uvloop for the event loop.
- **No access log**: uvicorn formats each access-log line's arguments (client address, path)
  even when the level drops it; ``access_log=False`` skips that work on every request.
- **Start-up objects out of the collector's way.** Once the app has started, everything alive
  (modules, FastAPI's routes and models, the cached priors) is moved to the permanent
  generation (``gc.freeze``), so that a full collection no longer walks it: measured under
  load, the longest collection pause fell from 54 ms to 4 ms of CPU. Each worker process does
  this after its own start-up (:class:`HardenedConfig`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import resource
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import ServingLimits

ACCEPTS_PER_TURN = 16  # connections one worker may accept per event-loop turn (accept_handles)

__all__ = [
    "ACCEPTS_PER_TURN",
    "FrozenHeapAfterStartup",
    "H11WithHeaderDeadline",
    "HardenedConfig",
    "accept_handles",
    "raise_open_file_limit",
    "serve",
    "uvicorn_config",
]


class HeaderDeadline:
    """Mixin for uvicorn's HTTP protocols: a request head must arrive before the deadline."""

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        seconds = getattr(self.config, "header_timeout_s", None)  # type: ignore[attr-defined]
        if seconds is not None and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._header_deadline = self.loop.call_later(seconds, self._header_deadline_passed)  # type: ignore[attr-defined]

    def _header_deadline_passed(self) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete:  # still waiting for a request head
            self.transport.close()  # type: ignore[attr-defined]


class H11WithHeaderDeadline(HeaderDeadline, H11Protocol):
    """uvicorn's pure-Python HTTP/1.1 protocol with the header deadline."""


if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsWithHeaderDeadline(HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol (C parser, faster) with the header deadline."""

    HTTP_PROTOCOL: type = HttpToolsWithHeaderDeadline
else:
    HTTP_PROTOCOL = H11WithHeaderDeadline


class FrozenHeapAfterStartup:
    """ASGI wrapper: once ``app`` reports its start-up complete, collect and freeze the heap."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_then_freeze(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                gc.collect()
                gc.freeze()

        await self.app(scope, receive, send_then_freeze)


class HardenedConfig(uvicorn.Config):
    """uvicorn's configuration; the app each process loads starts with a frozen heap."""

    def load(self) -> None:
        super().load()
        self.loaded_app = FrozenHeapAfterStartup(self.loaded_app)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def uvicorn_config(
    app: Any, *, host: str, port: int, limits: ServingLimits, workers: int = 1, **options: Any
) -> HardenedConfig:
    """A uvicorn configuration carrying ``limits`` (``app`` may be an import string)."""
    config = HardenedConfig(
        app,
        host=host,
        port=port,
        workers=workers,
        http=HTTP_PROTOCOL,
        loop="auto",  # uvloop when installed
        proxy_headers=False,
        server_header=False,
        limit_concurrency=limits.max_concurrency,
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive_s,
        log_level="warning",
        access_log=False,
        **options,
    )
    config.header_timeout_s = limits.header_timeout_s  # read by HeaderDeadline; survives pickling
    return config


def serve(app: Any, *, host: str, port: int, limits: ServingLimits, workers: int = 1) -> None:
    """Serve ``app`` until interrupted; several ``workers`` need ``app`` as a factory's import
    string (``"module:function"``) since each worker process builds its own."""
    raise_open_file_limit()
    factory = isinstance(app, str)
    config = uvicorn_config(
        app, host=host, port=port, limits=limits, workers=workers, factory=factory
    )
    sockets = accept_handles(config.bind_socket())
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)


def accept_handles(listening: socket.socket, count: int = ACCEPTS_PER_TURN) -> list[socket.socket]:
    """``listening`` and ``count - 1`` duplicates of it, one server each (one accept each
    per event-loop turn): together they accept up to ``count`` connections a turn."""
    return [listening, *(listening.dup() for _ in range(count - 1))]
