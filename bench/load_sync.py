"""Load test of the sync API with ``wrk``: priors GET and uploads, 200 connections, on loopback.

A Python load generator saturates long before the server does, so the load comes from Debian's
``wrk`` (``apt-get install -y wrk``), a C program. For each store (SQLite in a temporary
directory; PostgreSQL from ``--database-url`` or ``MICROADJUST_TEST_DATABASE_URL``) and each
``--workers`` count, the bench starts ``python -m microadjust.server`` on 127.0.0.1 with the rate
limits lifted, seeds one upload so that a prior exists, then runs ``wrk`` for ``--seconds`` each
(on a fresh store every time: PostgreSQL gets a scratch database of its own, created on the
server of the URL and dropped afterwards, so the role needs CREATEDB; a database that earlier
runs or the tests had filled made the first publication read their uploads, or fail on the
tests' stand-in increments):

- **priors**: ``GET /v1/sites/shop/priors`` with ``Accept-Encoding: gzip``, as browsers send it;
- **uploads**: ``POST /v1/sites/shop/uploads``, every request a new batch id (a small Lua
  script), so each one is validated, stored and merged.

It prints requests/s, p50, p99 and errors (socket errors, timeouts and any status other than
200/201/304) against the goals of the hardening issue: priors >= 5,000 req/s with p99 <= 50 ms,
uploads >= 1,000 req/s with p99 <= 200 ms, 0 errors. Uploads follow protocol v2 (a declared
site, one slot, at most four exposures). httptools and uvloop are used when
importable by the server (``pip install httptools uvloop``; they are in the ``server`` extra).

wrk and the server share the machine, so each row also gives what does not depend on it: the
server's CPU time per request (all its processes, from /proc), and the load average before and
after the run (other work on the machine inflates latency, not CPU per request). ``--pin`` puts
wrk on the last CPU and the server on the others (``taskset``), so that they do not preempt
each other; ``--python-path`` measures another copy of the package (before/after comparisons).

Run: ``.venv/bin/python bench/load_sync.py [--workers 1 2] [--seconds 10] [--pin] [--markdown]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

KEY = "load-test-upload-key"
VARIANTS = ("default", "discount", "quiz")
SITES = {"shop": {"key": KEY, "slots": {"cta": list(VARIANTS)},
                  "cells": {"device": ["desktop", "mobile"]}}}  # fmt: skip
LIFTED = "1000000000/1000000000"  # RATE/BURST: no rate limit gets in the way of the measure
BATCH_MARK = "BATCHIDBATCHIDBATCHIDBATCHIDBATC"  # replaced by a fresh id in every request
GOALS = {"priors": (5000.0, 50.0), "uploads": (1000.0, 200.0)}  # req/s at least, p99 ms at most

# wrk's Lua: each thread numbers its requests; ``done`` prints the summary as one JSON line.
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""
UPLOAD_LUA = """
local threads, counter = 0, 0
setup = function(thread) threads = threads + 1; thread:set("id", threads) end
init = function(args)
  math.randomseed(id * 7919 + os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Microadjust-Key"] = "%(key)s"
end
request = function()
  counter = counter + 1
  local batch = string.format("%%08x%%08x%%08x%%08x", id, counter,
    math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  return wrk.format(nil, nil, nil, [==[%(prefix)s]==] .. batch .. [==[%(suffix)s]==])
end
"""


def upload_body(batch_id: str, rng: random.Random) -> dict:
    """A realistic v2 upload: one visitor's exposures of one slot (at most 4) and its clicks."""
    variants: dict[str, dict[str, int]] = {}
    for _ in range(rng.randint(1, 4)):
        counts = variants.setdefault(rng.choice(VARIANTS), {"shown": 0, "reward": 0})
        counts["shown"] += 1
        counts["reward"] += int(rng.random() < 0.1)
    cell = f"device={rng.choice(('desktop', 'mobile'))}"
    return {"v": 2, "batch_id": batch_id, "slots": {"cta": {"cell": cell, "variants": variants}}}


@dataclass(frozen=True)
class Result:
    store: str
    workers: int
    kind: str
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU time per request, all its processes
    load: tuple[float, float]  # 1-minute load average before and after the run

    @property
    def meets_goal(self) -> bool:
        rate, p99 = GOALS[self.kind]
        return self.per_s >= rate and self.p99_ms <= p99 and self.errors == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(package: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(package), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1"}


def implementations(package: Path) -> str:
    """Which HTTP parser and event loop the server will use (as uvicorn picks them)."""
    probe = "import importlib.util as u; print(bool(u.find_spec('httptools')), bool(u.find_spec('uvloop')))"  # noqa: E501
    found = subprocess.run(
        [sys.executable, "-c", probe], env=server_env(package), capture_output=True, text=True
    ).stdout.split()
    http = "httptools" if found[:1] == ["True"] else "h11"
    loop = "uvloop" if found[1:] == ["True"] else "asyncio"
    return f"{http} + {loop}"


def cpu_sets(pin: bool) -> tuple[list[str], list[str]]:
    """``taskset`` prefixes for the server and for wrk: wrk on the last CPU, the server on the
    others (nothing when not pinning, or with a single CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return [], []
    server = ",".join(str(c) for c in cpus[:-1])
    return ["taskset", "-c", server], ["taskset", "-c", str(cpus[-1])]


def cpu_seconds(root: int) -> float:
    """User + system CPU time of process ``root`` and its children (the worker processes)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid, ppid = int(entry.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def start_server(
    port: int, data_dir: str, database_url: str | None, workers: int, args
) -> subprocess.Popen:
    sites = Path(data_dir) / "sites.json"
    sites.write_text(json.dumps(SITES))
    command = [
        sys.executable, "-m", "microadjust.server", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", data_dir, "--sites", str(sites), "--workers", str(workers),
        "--rate", "1e9", "--burst", "1000000000", "--upload-rate-ip", LIFTED,
        "--upload-rate-key", LIFTED, "--upload-budget", "1000000000", "--publish-interval", "1",
        "--max-concurrency", "10000",
    ]  # fmt: skip
    if database_url:
        command += ["--database-url", database_url]
    process = subprocess.Popen(
        cpu_sets(args.pin)[0] + command,
        cwd=ROOT,
        env=server_env(args.python_path),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2).close()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the sync server did not start")


def post_json(url: str, body: dict) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Microadjust-Key": KEY},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def run_wrk(url: str, script: str, headers: list[str], args) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    seconds = args.seconds
    try:
        command = cpu_sets(args.pin)[1] + [
            "wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{seconds:g}s",
            "--timeout", "10s", "-s", lua.name, *(arg for h in headers for arg in ("-H", h)), url,
        ]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(lua.name)
    lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
    if output.returncode or not lines:
        raise SystemExit(f"wrk failed ({output.returncode}): {output.stderr or output.stdout}")
    return json.loads(lines[-1])


@contextmanager
def scratch_database(url: str | None) -> Iterator[str | None]:
    """A new empty database on the server of ``url`` for one measure, dropped afterwards."""
    if url is None:
        yield None
        return
    import psycopg
    from psycopg import sql

    name = f"microadjust_load_{os.getpid()}_{random.getrandbits(32):08x}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def measure(store: str, database_url: str | None, workers: int, args) -> list[Result]:
    with scratch_database(database_url) as fresh:
        return measure_on(store, fresh, workers, args)


def measure_on(store: str, database_url: str | None, workers: int, args) -> list[Result]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    template = json.dumps(upload_body(BATCH_MARK, random.Random(0)), separators=(",", ":"))
    prefix, suffix = template.split(BATCH_MARK)
    upload_lua = UPLOAD_LUA % {"key": KEY, "prefix": prefix, "suffix": suffix} + REPORT_LUA
    results = []
    with tempfile.TemporaryDirectory(prefix="microadjust-load-") as data_dir:
        server = start_server(port, data_dir, database_url, workers, args)
        try:
            seed = upload_body(f"{random.getrandbits(128):032x}", random.Random(1))
            post_json(f"{base}/v1/sites/shop/uploads", seed)
            time.sleep(1.1)  # past --publish-interval: the first priors GET publishes
            urllib.request.urlopen(f"{base}/v1/sites/shop/priors", timeout=10).close()
            runs = (
                ("priors", f"{base}/v1/sites/shop/priors", REPORT_LUA, ["Accept-Encoding: gzip"]),
                ("uploads", f"{base}/v1/sites/shop/uploads", upload_lua, []),
            )
            for kind, url, script, headers in runs:
                load_before, cpu_before = os.getloadavg()[0], cpu_seconds(server.pid)
                raw = run_wrk(url, script, headers, args)
                cpu = cpu_seconds(server.pid) - cpu_before
                results.append(
                    Result(
                        store,
                        workers,
                        kind,
                        raw["requests"],
                        raw["requests"] / raw["seconds"],
                        raw["p50_us"] / 1000,
                        raw["p99_us"] / 1000,
                        raw["errors"],
                        1e6 * cpu / max(raw["requests"], 1),
                        (load_before, os.getloadavg()[0]),
                    )  # fmt: skip
                )
        finally:
            server.terminate()
            server.wait(20)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="server processes (default 1 2)"
    )
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run")
    parser.add_argument(
        "--database-url", default=os.environ.get("MICROADJUST_TEST_DATABASE_URL"),
        help="PostgreSQL server to measure as well, in a scratch database per measure created "
        "there and dropped after (default env MICROADJUST_TEST_DATABASE_URL)",
    )  # fmt: skip
    parser.add_argument(
        "--wrk-threads", type=int, default=1,
        help="wrk threads (default 1: on 2 CPUs a second wrk thread takes CPU from the server)",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action="store_true",
        help="wrk on the last CPU, the server on the others (taskset), so they do not preempt "
        "each other",
    )  # fmt: skip
    parser.add_argument(
        "--python-path", type=Path, default=ROOT / "py",
        help="directory holding the microadjust package to measure (default: this checkout's)",
    )  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print a dated Markdown table")
    args = parser.parse_args()
    if not (1 <= args.connections <= 10_000 and 1 <= args.seconds <= 120):
        parser.error("--connections in [1, 10000] and --seconds in [1, 120]")
    if any(not 1 <= w <= 16 for w in args.workers):
        parser.error("--workers in [1, 16]")
    if not 1 <= args.wrk_threads <= 64:
        parser.error("--wrk-threads in [1, 64]")
    if shutil.which("wrk") is None:
        print("bench/load_sync.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.pin and shutil.which("taskset") is None:
        parser.error("--pin needs taskset (util-linux)")

    stores = [("SQLite", None)] + ([("PostgreSQL", args.database_url)] if args.database_url else [])
    results = [
        result
        for store, url in stores
        for workers in args.workers
        for result in measure(store, url, workers, args)
    ]
    server_cpus, wrk_cpus = cpu_sets(args.pin)
    placement = (
        f"server on CPU {server_cpus[-1]}, wrk on CPU {wrk_cpus[-1]}"
        if server_cpus
        else "not pinned"
    )
    header = (
        f"wrk ({args.wrk_threads} thread{'s' if args.wrk_threads > 1 else ''}), "
        f"{args.connections} connections, {args.seconds:g} s per run, against "
        f"`python -m microadjust.server` on 127.0.0.1 ({implementations(args.python_path)}); "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs "
        f"shared with wrk ({placement}); CPU = server CPU time per request, "
        "load = 1-minute load average before → after the run"
    )
    goals = "goals: priors >= 5,000/s, p99 <= 50 ms; uploads >= 1,000/s, p99 <= 200 ms; 0 errors"
    if args.markdown:
        print(f"Sync API under load, {datetime.date.today().isoformat()}: {header}.\n")
        print(
            "| store | workers | requests | count | requests/s | p50 ms | p99 ms | errors "
            "| CPU µs | load | goal |"
        )
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for r in results:
            goal = "met" if r.meets_goal else "missed"
            print(
                f"| {r.store} | {r.workers} | {r.kind} | {r.requests} | {r.per_s:.0f} | "
                f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.cpu_us:.0f} | "
                f"{r.load[0]:.1f} → {r.load[1]:.1f} | {goal} |"
            )
        print(f"\n({goals}; `bench/load_sync.py --markdown`)")
    else:
        print(header)
        print(goals)
        for r in results:
            print(
                f"{r.store:>10} x{r.workers} {r.kind:>7}: {r.requests:7d} requests, "
                f"{r.per_s:7.0f}/s, p50 {r.p50_ms:7.1f} ms, p99 {r.p99_ms:7.1f} ms, "
                f"{r.errors} errors, CPU {r.cpu_us:4.0f} µs/request, "
                f"load {r.load[0]:4.1f} → {r.load[1]:4.1f}  "
                f"{'goal met' if r.meets_goal else 'goal missed'}"
            )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
