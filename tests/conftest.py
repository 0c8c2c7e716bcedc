"""Shared fixtures: a built bundle served on a free loopback port, and Debian's Chromium."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def load_bench(name: str) -> ModuleType:
    """Import a script from bench/ (a folder of scripts, not a package), once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="session")
def built() -> Path:
    """dist/, built (or found fresh) once per test run."""
    subprocess.run([sys.executable, str(ROOT / "build" / "bundle.py")], check=True)
    return ROOT / "dist"


@contextmanager
def serving(*options: str, health: str = "/") -> Iterator[str]:
    """serve.py (dist/ as built, plus ``options``) on a free loopback port; yields its base URL."""
    port = free_port()
    command = [sys.executable, str(ROOT / "serve.py"), "--no-build", "--port", str(port), *options]
    process = subprocess.Popen(command, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + health, process)
        yield base
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def server(built: Path) -> Iterator[str]:
    """The demo and the bundle, served as a site would serve them."""
    with serving() as base:
        yield base


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@dataclass
class Visit:
    """A page in a fresh browser profile, with everything it logged and requested."""

    page: object
    context: object
    console: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [m.text for m in self.console if m.type == "warning"]


@pytest.fixture
def visit(browser) -> Iterator[Visit]:
    context = browser.new_context()
    page = context.new_page()
    seen = Visit(page, context)
    page.on("console", lambda message: seen.console.append(message))
    page.on("pageerror", lambda error: seen.errors.append(error))
    context.on("request", lambda request: seen.requests.append(request.url))
    yield seen
    context.close()
