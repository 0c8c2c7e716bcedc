"""Crash test: kill -9 the sync server (SQLite) while browsers upload, restart it, retry every
batch whose acknowledgement never came: nothing acknowledged is lost, nothing counts twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for
from test_sync_api import SHOP, make_upload

ROOT = Path(__file__).resolve().parent.parent
KEY = "upload-key-123"
ADMIN = "admin-token-0123456789"
BATCHES = 240


def start(data_dir: Path, port: int) -> subprocess.Popen:
    sites = data_dir / "sites.json"
    sites.write_text(json.dumps({"shop": SHOP.model_dump()}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microadjust.server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--sites",
            str(sites),
            "--bucket-cap",
            "inf",
            "--admin-token",
            ADMIN,
            "--rate",
            "1e6",
            "--burst",
            "1000000",
            "--half-life-days",
            "1e9",
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "py")},
    )
    wait_for(f"http://127.0.0.1:{port}/v1/health", process)
    return process


def upload(client: httpx.Client, base: str, batch: str) -> str | None:
    """ "stored", "duplicate" or the error status; None when no answer came (the server died)."""
    try:
        response = client.post(
            f"{base}/v1/sites/shop/uploads",
            json=make_upload(batch, shown=1, reward=0),
            headers={"X-Microadjust-Key": KEY},
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return str(response.status_code)
    return "duplicate" if response.json()["duplicate"] else "stored"


def test_kill_9_during_uploads_loses_nothing_acknowledged_and_counts_nothing_twice(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(tmp_path, port)
    batches = [f"{i:032x}" for i in range(BATCHES)]
    acked: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def send(batch: str) -> None:
        with httpx.Client(timeout=10) as client:
            status = upload(client, base, batch)
        if status in ("stored", "duplicate"):
            with lock:
                acked.add(batch)
                if len(acked) >= BATCHES // 3 and not killed.is_set():
                    killed.set()
                    os.kill(server.pid, signal.SIGKILL)  # mid-flight: others are in transit

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, batches))
        server.wait(10)
        assert killed.is_set() and server.returncode == -signal.SIGKILL
        assert BATCHES // 3 <= len(acked) < BATCHES, "the kill landed mid-way"

        server = start(tmp_path, port)  # same data directory
        with httpx.Client(timeout=10) as client:
            for batch in sorted(acked):  # every acknowledged batch survived the crash
                assert upload(client, base, batch) == "duplicate", f"{batch} acked, then lost"
            for batch in batches:  # a client retries what was never acknowledged
                if batch not in acked:
                    assert upload(client, base, batch) in ("stored", "duplicate")
            auth = {"Authorization": f"Bearer {ADMIN}"}
            state = client.get(f"{base}/v1/admin/sites/shop", headers=auth).json()
            report = client.get(f"{base}/v1/admin/sites/shop/report", headers=auth).json()
        assert state["uploads"] == BATCHES and report["uploads"] == BATCHES
        quiz = report["slots"]["cta"]["cells"]["*"]["variants"]["quiz"]
        assert quiz["n"] == pytest.approx(BATCHES, abs=1e-6)
    finally:
        server.kill()
        server.wait(10)
