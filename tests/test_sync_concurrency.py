"""The sync API under many concurrent requests: what made the load tail, as behaviour.

At 200 connections the tail came from requests waiting on each other inside the app: every
``refresh_s`` all of them re-read the declared sites (one thread-pool read each) and queued on a
lock for the cached prior; every upload took its own transaction and queued on the write lock.
These tests drive the app in-process with many requests at once and count the store calls.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_sync_api import KEY, make_upload, settings

from microadjust.server.api import create_app
from microadjust.server.serving import ACCEPTS_PER_TURN, FrozenHeapAfterStartup, accept_handles

CONCURRENT = 50


def run(coroutine):
    """``asyncio.run`` in a thread of its own: the end-to-end tests' Playwright session keeps an
    event loop running in the main thread for the rest of the test run."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def counting(calls: list, method):
    """``method`` that records the size of each call's first argument (or 1) in ``calls``."""

    def counted(*args, **kwargs):
        first = args[0] if args else None
        calls.append(len(first) if isinstance(first, list) else 1)
        return method(*args, **kwargs)

    return counted


def at_once(app, requests) -> list[httpx.Response]:
    """Send ``requests`` (functions of a client) concurrently to ``app``, in one event loop."""

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://sync") as client:
            return await asyncio.gather(*(request(client) for request in requests))

    return run(send_all())


def test_concurrent_priors_requests_share_one_read_of_the_store(tmp_path):
    app = create_app(settings(tmp_path))
    storage = app.state.storage
    storage.migrate()
    declarations, serving = [], []
    storage.declarations = counting(declarations, storage.declarations)
    storage.serving = counting(serving, storage.serving)
    responses = at_once(app, [lambda c: c.get("/v1/sites/shop/priors")] * CONCURRENT)
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    assert len({r.headers["etag"] for r in responses}) == 1
    assert len(declarations) == 1  # was one read per request
    assert len(serving) == 1
    storage.close()


def test_concurrent_uploads_are_committed_together_and_each_counted_once(tmp_path):
    app = create_app(settings(tmp_path))
    storage = app.state.storage
    storage.migrate()
    batches: list[int] = []
    app.state.api._uploads.write = counting(batches, storage.record_uploads)
    repeated = make_upload()
    bodies = [make_upload() for _ in range(CONCURRENT - 2)] + [repeated, repeated]
    headers = {"X-Microadjust-Key": KEY}
    responses = at_once(
        app,
        [lambda c, b=body: c.post("/v1/sites/shop/uploads", json=b, headers=headers)
         for body in bodies],
    )  # fmt: skip
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    assert sorted(r.json()["duplicate"] for r in responses[-2:]) == [False, True]
    assert sum(batches) == CONCURRENT and len(batches) < CONCURRENT / 2
    assert storage.upload_count("shop") == CONCURRENT - 1
    storage.close()


def test_a_failed_group_commit_fails_each_of_its_uploads_and_stores_none(tmp_path):
    app = create_app(settings(tmp_path))
    storage = app.state.storage
    storage.migrate()

    def broken(batch):
        raise OSError("disk I/O error")

    app.state.api._uploads.write = broken
    headers = {"X-Microadjust-Key": KEY}

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sync") as client:
            sent = [
                client.post("/v1/sites/shop/uploads", json=make_upload(), headers=headers)
                for _ in range(5)
            ]
            return [r.status_code for r in await asyncio.gather(*sent)]

    assert run(send_all()) == [500] * 5  # none acknowledged: the client retries
    assert storage.upload_count("shop") == 0
    storage.close()


def test_the_served_app_freezes_its_start_up_heap_out_of_the_collector():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})

    async def start() -> None:
        async def receive():
            return {"type": "lifespan.startup"}

        async def send(message):
            pass

        await FrozenHeapAfterStartup(app)({"type": "lifespan"}, receive, send)

    gc.unfreeze()
    try:
        run(start())
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def accepted_in_one_turn(handles_of, waiting: int) -> int:
    """How many of ``waiting`` connections, opened before the loop runs, uvloop accepts in its
    first turn when the listening socket is served through ``handles_of(listening)`` (in a
    thread of its own, as :func:`run`)."""
    uvloop = pytest.importorskip("uvloop")
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_accepted_in_one_turn, uvloop, handles_of, waiting).result()


def _accepted_in_one_turn(uvloop, handles_of, waiting: int) -> int:
    loop = uvloop.new_event_loop()
    accepted: list[asyncio.BaseTransport] = []

    class Accepting(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    servers = [
        loop.run_until_complete(loop.create_server(Accepting, sock=handle))
        for handle in handles_of(listening)
    ]
    clients = [socket.create_connection(listening.getsockname()) for _ in range(waiting)]
    try:
        loop.call_soon(loop.stop)  # one turn
        loop.run_forever()
        return len(accepted)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.close()
        loop.close()


def test_a_burst_of_new_connections_is_accepted_in_one_event_loop_turn():
    """uvloop accepts one connection per listening handle and turn, so that under load the
    last of 200 connections opened at once waited 2 s for its accept (200 busy turns)."""
    assert accepted_in_one_turn(lambda listening: [listening], 10) < 10  # what made the wait
    assert accepted_in_one_turn(accept_handles, 10) == 10
    assert ACCEPTS_PER_TURN >= 10
