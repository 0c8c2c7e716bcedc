"""Load test of the sync API on loopback: many concurrent clients, a bounded number of requests.

Starts ``python -m microadjust.server`` on 127.0.0.1 (SQLite in a temporary directory, or
PostgreSQL with ``--database-url``), seeds one upload so that priors exist, then runs
``--clients`` asyncio httpx clients that share ``--requests`` requests: a browser-like mix of
priors fetches (half of them revalidating with ``If-None-Match``, as a warm HTTP cache does)
and v2 uploads (``--upload-share``, each a fresh batch id). Prints requests/s, p50/p99
latency and errors per kind; ``--markdown`` prints a dated table. Bounded by ``--max-seconds``.

Run: ``.venv/bin/python bench/load_sync.py [--clients 100] [--requests 5000] [--markdown]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "py"))

KEY = "load-test-upload-key"
VARIANTS = ("default", "discount", "quiz")
SITES = {"shop": {"key": KEY, "slots": {"cta": list(VARIANTS)},
                  "cells": {"device": ["desktop", "mobile"]}}}  # fmt: skip


def upload_body(batch_id: str, rng: random.Random) -> dict:
    """A realistic v2 upload: one visitor's exposures of one slot (at most 4) and its clicks."""
    variants: dict[str, dict[str, int]] = {}
    for _ in range(rng.randint(1, 4)):
        counts = variants.setdefault(rng.choice(VARIANTS), {"shown": 0, "reward": 0})
        counts["shown"] += 1
        counts["reward"] += int(rng.random() < 0.1)
    cell = f"device={rng.choice(('desktop', 'mobile'))}"
    return {"v": 2, "batch_id": batch_id, "slots": {"cta": {"cell": cell, "variants": variants}}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int, data_dir: str, database_url: str | None) -> subprocess.Popen:
    sites = Path(data_dir) / "sites.json"
    sites.write_text(json.dumps(SITES))
    command = [
        sys.executable, "-m", "microadjust.server", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", data_dir, "--sites", str(sites), "--rate", "1e9", "--burst", "1000000000",
        "--publish-interval", "1",
    ]  # fmt: skip
    if database_url:
        command += ["--database-url", database_url]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "py"), "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the sync server did not start")


async def run(base: str, clients: int, requests: int, share: float, max_s: float) -> dict:
    """Drive the server; return latencies (s) and error counts per request kind."""
    latencies: dict[str, list[float]] = {"priors": [], "upload": []}
    errors: dict[str, int] = {"priors": 0, "upload": 0}
    remaining = requests
    stop_at = time.monotonic() + max_s

    async def client(index: int) -> None:
        nonlocal remaining
        rng = random.Random(index)
        etag = None
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            while remaining > 0 and time.monotonic() < stop_at:
                remaining -= 1
                kind = "upload" if rng.random() < share else "priors"
                started = time.perf_counter()
                try:
                    if kind == "upload":
                        body = upload_body(f"{rng.getrandbits(128):032x}", rng)
                        r = await http.post(
                            "/v1/sites/shop/uploads", json=body, headers={"X-Microadjust-Key": KEY}
                        )
                        ok = r.status_code == 200 and not r.json()["refused"]
                    else:
                        headers = {"Accept-Encoding": "gzip"}
                        if etag and rng.random() < 0.5:
                            headers["If-None-Match"] = etag
                        r = await http.get("/v1/sites/shop/priors", headers=headers)
                        ok = r.status_code in (200, 304)
                        etag = r.headers.get("etag", etag)
                except httpx.HTTPError:
                    ok = False
                latencies[kind].append(time.perf_counter() - started)
                errors[kind] += not ok

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--upload-share", type=float, default=0.2)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--database-url", default=None, help="PostgreSQL instead of SQLite")
    parser.add_argument("--markdown", action="store_true", help="print a dated Markdown table")
    args = parser.parse_args()
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 1_000_000):
        parser.error("--clients in [1, 1000] and --requests in [1, 1000000]")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="microadjust-load-") as data_dir:
        server = start_server(port, data_dir, args.database_url)
        try:
            httpx.post(f"{base}/v1/sites/shop/uploads", json=upload_body("0" * 32,
                       random.Random(0)), headers={"X-Microadjust-Key": KEY})  # fmt: skip
            result = asyncio.run(
                run(base, args.clients, args.requests, args.upload_share, args.max_seconds)
            )
        finally:
            server.terminate()
            server.wait(10)

    storage = "PostgreSQL" if args.database_url else "SQLite"
    rows = []
    total = sum(len(v) for v in result["latencies"].values())
    for kind in ("priors", "upload", "all"):
        lat = sum(result["latencies"].values(), []) if kind == "all" else result["latencies"][kind]
        errs = sum(result["errors"].values()) if kind == "all" else result["errors"][kind]
        rows.append(
            (
                kind,
                len(lat),
                len(lat) / result["seconds"],
                1000 * percentile(lat, 0.5),
                1000 * percentile(lat, 0.99),
                errs,
            )  # fmt: skip
        )
    header = (
        f"{args.clients} concurrent clients, {total} requests ({args.upload_share:.0%} uploads) "
        f"in {result['seconds']:.1f} s against one server process on 127.0.0.1 ({storage}); "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    if args.markdown:
        print(f"Sync API load test, {datetime.date.today().isoformat()}: {header}.\n")
        print("| requests | count | requests/s | p50 ms | p99 ms | errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for kind, n, rps, p50, p99, errs in rows:
            print(f"| {kind} | {n} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {errs} |")
    else:
        print(header)
        for kind, n, rps, p50, p99, errs in rows:
            print(f"{kind:>7}: {n:6d} requests, {rps:7.0f}/s, p50 {p50:6.1f} ms, "
                  f"p99 {p99:6.1f} ms, {errs} errors")  # fmt: skip
    return 1 if sum(result["errors"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
