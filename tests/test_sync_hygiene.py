"""Serving hygiene of the sync server, one test per attack of the hardening issue: slow clients,
hostile paths and bodies, missing security headers, unlimited admin requests, spoofed
X-Forwarded-For, and a health check that says ok on a broken store."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2, which is not needed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from conftest import ROOT, free_port, wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from microadjust.server.api import create_app
from microadjust.server.config import SyncSettings
from microadjust.server.health import HealthCheck, check_health, store_problem
from microadjust.server.hygiene import harden
from microadjust.server.limits import RateRule, ServingLimits
from microadjust.server.models import SiteDeclaration
from microadjust.server.ratelimit import PostgresBuckets
from microadjust.server.safejson import MAX_DEPTH, UnsafeJSON, loads
from microadjust.server.static import StaticBundle
from microadjust.server.storage import Storage

KEY = "upload-key-123"
ADMIN = "admin-token-0123456789"
PG_URL = os.environ.get("MICROADJUST_TEST_DATABASE_URL")
GENEROUS = RateRule(1e6, 10**6)


def settings(tmp_path: Path, **limits) -> SyncSettings:
    limits.setdefault("health_every_s", 0.0)  # every probe checks the store again
    return SyncSettings(
        sites={"shop": SiteDeclaration(key=KEY, slots={"cta": ["default", "quiz"]})},
        admin_token=ADMIN,
        data_dir=tmp_path,
        publish_interval_s=0.0,
        limits=ServingLimits(**limits),
    )


@pytest.fixture
def api(tmp_path):
    with TestClient(create_app(settings(tmp_path))) as client:
        yield client


def upload(client: TestClient, raw: bytes):
    return client.post(
        "/v1/sites/shop/uploads",
        content=raw,
        headers={"X-Microadjust-Key": KEY, "Content-Type": "application/json"},
    )


# -- slow clients ------------------------------------------------------------------------


@contextmanager
def running_server(data_dir: Path, *options: str) -> Iterator[int]:
    """``python -m microadjust.server`` with ``options``, on a free loopback port."""
    port = free_port()
    command = [
        sys.executable, "-m", "microadjust.server", "--port", str(port),
        "--data-dir", str(data_dir), "--site", f"shop={KEY}", "--admin-token", ADMIN, *options,
    ]  # fmt: skip
    paths = [str(ROOT / "py"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/v1/health", process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def sync_server(tmp_path):
    """The server with one-second deadlines and no upload limit for its one loopback client."""
    options = ("--header-timeout", "1", "--body-timeout", "1", "--upload-rate-ip", "1000/1000")
    with running_server(tmp_path, *options) as port:
        yield port


def held_connections(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    held = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=60)
        conn.sendall(first_bytes)
        held.append(conn)
    return held


def what_server_said(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket's
    timeout: a server that never closes fails the test with a timeout)."""
    received = b""
    with conn:
        while chunk := conn.recv(4096):
            received += chunk
    return received


def test_slow_body_connections_are_cut_and_the_server_still_answers(sync_server):
    head = (
        "POST /v1/sites/shop/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Microadjust-Key: {KEY}\r\nContent-Type: application/json\r\n"
        'Content-Length: 4000\r\n\r\n{"v": 2, '
    ).encode()
    held = held_connections(sync_server, 200, head)
    with urllib.request.urlopen(f"http://127.0.0.1:{sync_server}/v1/health", timeout=60) as r:
        assert r.status == 200
    answers = [what_server_said(conn) for conn in held]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert b'"field": "body"' in answers[0]


def test_slow_header_connections_are_closed(sync_server):
    held = held_connections(sync_server, 50, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert [what_server_said(conn) for conn in held] == [b""] * 50


def test_a_body_trickled_after_the_response_does_not_hold_the_connection(sync_server):
    """404 answers without reading the body; the rest of it must not keep the socket."""
    head = b"POST /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nx"
    (conn,) = held_connections(sync_server, 1, head)
    assert what_server_said(conn).startswith(b"HTTP/1.1 ")


# -- hostile paths -----------------------------------------------------------------------


@pytest.fixture
def static(tmp_path):
    for name in ("index.html", "a/page.html", ".dir/file", "a/.hidden/b.js", ".env"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    return TestClient(StaticBundle(tmp_path))


@pytest.mark.parametrize("path", ["/.dir/file", "/a/.hidden/b.js", "/.env", "/a/../.dir/file"])
def test_dot_directory_in_any_path_part_is_not_served(static, path):
    assert static.get(path).status_code == 404


def test_ordinary_nested_static_files_are_still_served(static):
    assert static.get("/a/page.html").text == "a/page.html"


@pytest.mark.parametrize("path", ["/a%00b", "/a/page.html%00.js"])
def test_nul_byte_in_a_static_path_is_400(static, path):
    response = static.get(path)
    assert response.status_code == 400 and "NUL" in response.text


# -- hostile bodies ----------------------------------------------------------------------


def test_deep_json_is_400_naming_the_body(api):
    response = upload(api, b"[" * 8_000 + b"]" * 8_000)  # deep, yet within a 16 KiB body
    assert response.status_code == 400
    assert response.json()["field"] == "body" and "deeper" in response.json()["error"]


def test_json_just_too_deep_names_where(api):
    nested = b'{"slots": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    response = upload(api, nested)
    assert response.status_code == 400
    assert response.json()["field"].startswith("slots[0]")


def test_huge_integer_is_400(api):
    response = upload(api, b'{"v": ' + b"9" * 400 + b"}")
    assert response.status_code == 400
    assert response.json() == {
        "error": "an integer has 400 digits; at most 18 are accepted",
        "field": "body",
    }


def test_lone_surrogate_is_400_naming_the_field(api):
    response = upload(api, b'{"batch_id": "\\ud800"}')
    assert response.status_code == 400
    assert response.json()["field"] == "batch_id" and "surrogate" in response.json()["error"]


def test_invalid_utf8_is_400(api):
    response = upload(api, b'{"batch_id": "\xed\xa0\x80"}')
    assert response.status_code == 400 and "UTF-8" in response.json()["error"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_422_naming_the_field(api, number):
    response = upload(api, b'{"slots": {"cta": [0, ' + number + b"]}}")
    assert response.status_code == 422 and "finite" in response.json()["error"]
    assert response.json()["field"] == "slots.cta[1]"


def test_admin_bodies_are_vetted_too(api):
    response = api.post(
        "/v1/admin/sites/shop/rollback",
        content=b"[" * 8_000,
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 400


def test_safe_json_accepts_what_an_upload_needs():
    body = b'{"v": 2, "slots": {"cta": {"variants": {"quiz": {"shown": 1, "reward": 0.5}}}}}'
    assert loads(body)["slots"]["cta"]["variants"]["quiz"] == {"shown": 1, "reward": 0.5}
    with pytest.raises(UnsafeJSON, match="not valid JSON"):
        loads(b'{"v": ')


# -- security headers --------------------------------------------------------------------


def test_report_has_a_strict_csp_and_cannot_be_framed(api):
    response = api.get("/report", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "script-src" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    (css,) = re.findall(r"<style>(.*?)</style>", response.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in policy  # the page's own style still applies


@pytest.mark.parametrize(
    "path", ["/v1/health", "/v1/sites/shop/priors", "/v1/sites/nope/priors", "/openapi.json"]
)
def test_api_responses_are_nosniff(api, path):
    assert api.get(path).headers["x-content-type-options"] == "nosniff"


def test_parser_errors_are_nosniff_too(api):
    assert upload(api, b"[" * 100).headers["x-content-type-options"] == "nosniff"


# -- rate limits ---------------------------------------------------------------------------


def test_admin_endpoints_are_rate_limited_even_with_a_wrong_token(tmp_path):
    app = create_app(settings(tmp_path, admin_per_ip=RateRule(0.001, 3)))
    with TestClient(app) as client:
        statuses = [
            client.get(
                "/v1/admin/sites/shop", headers={"Authorization": "Bearer guess"}
            ).status_code
            for _ in range(3)
        ]
        refused = client.get("/report", headers={"Authorization": f"Bearer {ADMIN}"})
    assert statuses == [401, 401, 401]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "admin requests" in refused.json()["error"]


def test_uploads_are_rate_limited_per_client(tmp_path):
    app = create_app(settings(tmp_path, upload_per_ip=RateRule(0.001, 2)))
    with TestClient(app) as client:
        statuses = [upload(client, b"{}").status_code for _ in range(3)]
    assert statuses == [422, 422, 429]


def test_uploads_are_rate_limited_per_site_key(tmp_path):
    app = create_app(settings(tmp_path, upload_per_key=RateRule(0.001, 2)))
    with (
        TestClient(app, client=("192.0.2.1", 1)) as one,
        TestClient(app, client=("192.0.2.2", 1)) as other,
    ):
        statuses = [upload(c, b"{}").status_code for c in (one, other, one)]
        unknown_site = other.post("/v1/sites/other/uploads", content=b"{}")
    assert statuses == [422, 422, 429]
    assert unknown_site.status_code == 404  # another site's name draws from no site's bucket


@pytest.fixture
def postgres_url():
    if not PG_URL:
        pytest.skip(
            "PostgreSQL not configured: set MICROADJUST_TEST_DATABASE_URL=postgresql://... "
            "(.ci/run starts a local server and sets it)"
        )
    store = Storage(database_url=PG_URL)
    try:
        store.migrate()  # creates rate_limit_buckets (migration 3)
        with store._transaction() as run:
            run("DELETE FROM rate_limit_buckets")
    finally:
        store.close()
    return PG_URL


def test_shared_rate_limit_across_two_app_instances_on_one_postgresql(tmp_path, postgres_url):
    def instance() -> TestClient:
        values = settings(tmp_path, admin_per_ip=RateRule(0.001, 3))
        return TestClient(create_app(replace(values, database_url=postgres_url)))

    with instance() as first, instance() as second:
        guess = {"Authorization": "Bearer guess"}
        statuses = [
            c.get("/v1/admin/sites/shop", headers=guess).status_code
            for c in (first, second, first, second, first)
        ]
    assert statuses == [401, 401, 401, 429, 429]


def test_a_client_refused_in_postgresql_does_not_drain_its_site_bucket(postgres_url):
    store = PostgresBuckets(postgres_url)
    ip, site = RateRule(0.001, 1), RateRule(0.001, 2)
    try:
        assert store.take([("upload:192.0.2.1", ip), ("site:shop", site)]) is None
        refused, _ = store.take([("upload:192.0.2.1", ip), ("site:shop", site)])
        assert refused == 0  # the client's own bucket was empty: the site's is not touched
        assert store.take([("upload:192.0.2.2", ip), ("site:shop", site)]) is None
        assert store.take([("upload:192.0.2.3", ip), ("site:shop", site)])[0] == 1
    finally:
        store.close()


def test_each_request_of_a_pipeline_releases_its_buckets_when_its_take_is_done(postgres_url):
    """The requests checked together are not one transaction: a pipeline waiting on one
    bucket holds no other. (They were: two workers' pipelines taking a client's and a site's
    buckets, and the site's upload budget, in opposite orders deadlocked, a 1 s stall and a
    batch of 503s under load, until PostgreSQL's deadlock detector aborted one.)"""
    import psycopg

    rule = RateRule(1000.0, 1000)
    buckets, other = PostgresBuckets(postgres_url), PostgresBuckets(postgres_url)
    assert buckets.take([("budget:shop", rule)]) is None  # the row exists: it can be locked
    with psycopg.connect(postgres_url, autocommit=True) as blocker:
        pipeline = ThreadPoolExecutor(1)
        try:
            with blocker.transaction():  # another worker's transaction on the site's budget
                blocker.execute("SELECT 1 FROM rate_limit_buckets WHERE bucket = 'budget:shop' "
                                "FOR UPDATE")  # fmt: skip
                waiting = pipeline.submit(
                    buckets.take_many,
                    [[("upload:192.0.2.9", rule), ("site:shop", rule)], [("budget:shop", rule)]],
                )
                with psycopg.connect(postgres_url, autocommit=True) as probe:
                    waits = "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND locktype = %s"
                    for _ in range(1000):  # until the pipeline waits for the budget's row
                        if probe.execute(waits, ("transactionid",)).fetchone()[0]:
                            break
                        threading.Event().wait(0.01)
                    else:
                        pytest.fail("the pipeline never waited for the locked budget row")
                    with probe.transaction():
                        held = probe.execute(
                            "SELECT bucket FROM rate_limit_buckets WHERE bucket IN "
                            "('upload:192.0.2.9', 'site:shop') FOR UPDATE SKIP LOCKED"
                        ).fetchall()
                    assert sorted(b for (b,) in held) == ["site:shop", "upload:192.0.2.9"]
                    assert other.take([("site:shop", rule)]) is None
            assert waiting.result(timeout=30) == [None, None]
        finally:
            pipeline.shutdown()
            buckets.close()
            other.close()


def test_a_failed_pipeline_leaves_no_transaction_open(postgres_url):
    """A pipeline that fails between a take's BEGIN and COMMIT drops its connection: reused,
    it would keep the transaction (and its locks) open, or fail every later take."""
    import psycopg

    rule = RateRule(1000.0, 1000)
    buckets = PostgresBuckets(postgres_url)
    try:
        with pytest.raises(psycopg.DataError, match="NUL"):
            buckets.take_many([[("upload:192.0.2.7", rule)], [("upload:\x00", rule)]])
        # a closed connection's server process ends when it reads the close: wait for that,
        # boundedly (a reused connection would keep its transaction open for good)
        deadline = time.monotonic() + 30
        with psycopg.connect(postgres_url, autocommit=True) as probe:
            while (
                open_transactions := _idle_in_transaction(probe)
            ) and time.monotonic() < deadline:
                threading.Event().wait(0.05)
        assert open_transactions == 0
        assert buckets.take_many([[("upload:192.0.2.7", rule)]] * 4) == [None] * 4
    finally:
        buckets.close()


# -- X-Forwarded-For -----------------------------------------------------------------------


def echo_client(tmp_path: Path, peer: str, trusted: tuple[str, ...]) -> TestClient:
    """An app behind :func:`harden` that answers with the client address it was given."""

    async def whoami(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.client.host)

    app = Starlette(routes=[Route("/whoami", whoami)])
    harden(app, settings(tmp_path, trusted_proxies=trusted))
    return TestClient(app, client=(peer, 4000))


def test_x_forwarded_for_is_ignored_without_trusted_proxies(tmp_path):
    client = echo_client(tmp_path, "127.0.0.1", ())
    assert client.get("/whoami", headers={"X-Forwarded-For": "6.6.6.6"}).text == "127.0.0.1"


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path):
    client = echo_client(tmp_path, "203.0.113.9", ("10.0.0.0/8",))
    assert client.get("/whoami", headers={"X-Forwarded-For": "6.6.6.6"}).text == "203.0.113.9"


def test_x_forwarded_for_from_a_trusted_proxy_gives_the_right_most_untrusted_address(tmp_path):
    client = echo_client(tmp_path, "10.0.0.2", ("10.0.0.0/8",))
    spoofed = "6.6.6.6, 198.51.100.7, 10.0.0.5"  # client-written, then what the proxies saw
    assert client.get("/whoami", headers={"X-Forwarded-For": spoofed}).text == "198.51.100.7"


def test_the_served_app_does_not_trust_x_forwarded_for_from_loopback(tmp_path):
    """uvicorn believes loopback's X-Forwarded-For by default; the server must not: a client
    on the same host would otherwise pick a fresh rate-limit bucket per request."""

    def admin_status(port: int, forwarded_for: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/admin/sites/shop",
            headers={"Authorization": "Bearer guess", "X-Forwarded-For": forwarded_for},
        )
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as refused:
            return refused.code
        return 200

    with running_server(tmp_path, "--admin-rate-ip", "0.001/1") as port:
        assert [admin_status(port, ip) for ip in ("192.0.2.1", "192.0.2.2")] == [401, 429]


def test_a_bad_trusted_proxy_is_a_clear_error():
    with pytest.raises(ValueError, match="not an address or network"):
        ServingLimits(trusted_proxies=("10.0.0.0/33",))


# -- health --------------------------------------------------------------------------------


def test_health_is_503_on_a_corrupted_sqlite_file(tmp_path, api):
    assert api.get("/v1/health").status_code == 200
    database = tmp_path / "microadjust-sync.sqlite3"
    api.app.state.storage.close()  # checkpoints the WAL into the file
    for leftover in ("-wal", "-shm"):
        Path(f"{database}{leftover}").unlink(missing_ok=True)
    with database.open("r+b") as file:
        file.write(b"not a database, " * 256)
    response = api.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["status"] == "store not writable"
    assert "not a database" in response.json()["reason"]


@pytest.fixture
def read_only(tmp_path):
    """Make files read-only even for root (immutable), or skip where that is impossible."""
    made = []

    def protect(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o444)
        elif not shutil.which("chattr") or subprocess.run(["chattr", "+i", path]).returncode:
            pytest.skip("cannot make a file read-only for root here (chattr +i)")
        made.append(path)

    yield protect
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", path], check=False)
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_health_is_503_on_a_read_only_sqlite_file(tmp_path, api, read_only):
    assert api.get("/v1/health").status_code == 200
    api.app.state.storage.close()  # as after a restart on a disk remounted read-only
    read_only(tmp_path / "microadjust-sync.sqlite3")
    read_only(tmp_path)  # no journal can be created beside it either
    response = api.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["status"] == "store not writable"
    assert "OperationalError" in response.json()["reason"]  # readonly, or no -shm to open


def test_health_is_503_when_the_disk_is_full(tmp_path):
    """A full disk, as the kernel reports it: in a process that may not grow any file
    (RLIMIT_FSIZE 0, the limit a full file system imposes on new blocks), the heartbeat fails."""
    storage = Storage(data_dir=tmp_path)
    storage.migrate()
    assert check_health(storage).http_status == 200
    storage.close()  # as after a restart: the next connection needs a new WAL
    probe = f"""
import json, resource, signal, sys
from microadjust.server.health import check_health
from microadjust.server.storage import Storage
storage = Storage(data_dir={str(tmp_path)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write is an error, not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
health = check_health(storage)
sys.stdout.write(json.dumps([health.http_status, health.body()]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    status, body = json.loads(out.stdout or out.stderr)
    assert status == 503 and body["status"] == "store not writable"
    assert "disk" in body["reason"]  # SQLite: "disk I/O error" or "database or disk is full"


def test_health_is_503_when_the_disk_has_less_free_space_than_required(tmp_path):
    """Once SQLite's WAL has grown, a heartbeat rewrites it in place and succeeds on a full disk
    while the next uploads would not: the free space itself is checked."""
    storage = Storage(data_dir=tmp_path)
    storage.migrate()
    disk = shutil.disk_usage(tmp_path)
    assert check_health(storage, min_free_bytes=1).http_status == 200
    health = check_health(storage, min_free_bytes=disk.total + 1)
    assert health.http_status == 503 and health.reason.startswith("the disk is full")
    storage.close()


def test_a_flood_of_health_probes_writes_once_a_second(tmp_path):
    storage = Storage(data_dir=tmp_path)
    storage.migrate()
    probe = HealthCheck(storage, every_s=3600.0)

    def heartbeat() -> float:
        with sqlite3.connect(tmp_path / "microadjust-sync.sqlite3") as conn:
            return conn.execute("SELECT checked_at FROM health_heartbeat").fetchone()[0]

    assert probe().http_status == 200
    first = heartbeat()
    assert [probe().http_status for _ in range(50)] == [200] * 50
    assert heartbeat() == first
    storage.close()


def test_health_is_503_on_a_missing_sqlite_file(tmp_path):
    storage = Storage(data_dir=tmp_path)  # never migrated: no file yet
    assert check_health(storage).http_status == 503


def test_health_is_503_on_a_read_only_postgresql(postgres_url):
    read_only_url = postgres_url + "?options=-c%20default_transaction_read_only%3Don"
    health = check_health(Storage(database_url=read_only_url))
    assert health.http_status == 503 and "read-only" in health.reason
    assert store_problem(Storage(database_url=postgres_url)) is None  # the same, writable


def _idle_in_transaction(probe) -> int:
    """Server processes of this database inside a transaction that waits for its client."""
    return probe.execute(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'"
    ).fetchone()[0]
