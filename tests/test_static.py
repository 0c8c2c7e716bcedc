"""The static server sends what the bundle needs: wasm type, brotli and gzip twins, cache rules."""

from __future__ import annotations

import gzip

import brotli
import pytest
from starlette.testclient import TestClient

from microadjust.server.static import StaticBundle


@pytest.fixture
def client(tmp_path):
    wasm = b"\0asm" + b"\1" * 4000
    files = {
        "index.html": b"<!doctype html><title>demo</title>",
        "microadjust/microadjust.js": b"console.log(1);" * 100,
        "microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm": wasm,
        "microadjust/app-0123456789ab/worker.js": b"// worker",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm.gz").write_bytes(
        gzip.compress(wasm)
    )
    (tmp_path / "microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm.br").write_bytes(
        brotli.compress(wasm)
    )
    (tmp_path.parent / "secret.txt").write_text("no")
    (tmp_path / ".stamp").write_text("build stamp")
    return TestClient(StaticBundle(tmp_path))


@pytest.mark.parametrize(
    ("accepted", "sent"), [("gzip", "gzip"), ("gzip, br", "br")], ids=["gzip", "brotli preferred"]
)
def test_wasm_is_served_as_wasm_compressed_and_immutable(client, accepted, sent):
    response = client.get(
        "/microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm",
        headers={"Accept-Encoding": accepted},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/wasm"
    assert response.headers["content-encoding"] == sent
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.content.startswith(b"\0asm")  # the client undid the compression


def test_without_gzip_the_plain_file_is_sent(client):
    response = client.get(
        "/microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm",
        headers={"Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


def test_the_loader_is_revalidated_and_etags_give_304(client):
    first = client.get("/microadjust/microadjust.js")
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["content-type"].startswith("text/javascript")
    again = client.get(
        "/microadjust/microadjust.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304


def test_content_named_app_files_are_immutable_and_root_is_the_demo(client):
    worker = client.get("/microadjust/app-0123456789ab/worker.js")
    assert worker.headers["cache-control"].endswith("immutable")
    assert client.get("/").text.startswith("<!doctype html>")


@pytest.mark.parametrize(
    "path",
    [
        "/missing.js",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm.gz",
        "/microadjust/pyodide-0.27.7-0123456789ab/pyodide.asm.wasm.br",
        "/.stamp",
    ],
)
def test_missing_and_escaping_paths_are_404(client, path):
    assert client.get(path).status_code == 404


def test_only_get_and_head(client):
    assert client.post("/index.html").status_code == 405
    assert client.head("/index.html").status_code == 200


def test_the_loader_types_are_served_as_text(tmp_path):
    (tmp_path / "microadjust.d.ts").write_text("export interface Microadjust {}\n")
    response = TestClient(StaticBundle(tmp_path)).get("/microadjust.d.ts")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
