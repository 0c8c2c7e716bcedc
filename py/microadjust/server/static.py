"""Serve the built ``dist/`` directory the way the bundle needs it.

- ``application/wasm`` for wasm (Pyodide compiles it with ``instantiateStreaming``);
- the ``.br`` or ``.gz`` twin written by the build when the client accepts brotli or gzip;
- ``immutable`` year-long caching for content-named directories (``app-<hash>/``,
  ``pyodide-<version>-<hash>/``, ``pyscript-<version>/``), revalidation with ETags for the rest;
- cross-origin isolation headers for PyScript pages only.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

IMMUTABLE = re.compile(r"^microadjust/(app-[0-9a-f]+|pyodide-[0-9.]+-[0-9a-f]+|pyscript-[0-9.]+)/")
# PyScript pages run Python in a worker that reaches the DOM synchronously through a
# SharedArrayBuffer, which only a cross-origin isolated page has: only they get these headers.
ISOLATED = re.compile(r"^pyscript[\w.-]*\.html$")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
TWINS = {"br": ".br", "gzip": ".gz"}  # compressed by the build; the first the client accepts
TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".whl": "application/zip",
    ".json": "application/json",
    ".zip": "application/zip",
    ".ts": "text/plain; charset=utf-8",  # the loader's types; mimetypes says MPEG video
}


class StaticBundle:
    """An ASGI app serving files under ``root``; ``/`` is ``index.html``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = self.response(request)
        await response(scope, receive, send)

    def response(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("method not allowed", 405, headers={"Allow": "GET, HEAD"})
        relative = request.url.path.lstrip("/") or "index.html"
        if "\x00" in relative:  # no file name holds one; the OS call would raise
            return PlainTextResponse("bad request: a NUL byte in the path", 400)
        # dot-files and dot-directories anywhere (build stamps, .git, ...), compressed twins
        hidden = any(part.startswith(".") for part in relative.split("/")) or relative.endswith(
            (".gz", ".br")
        )
        path = (self.root / relative).resolve()
        if hidden or self.root not in path.parents or not path.is_file():
            return PlainTextResponse("not found", 404)
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable"
            if IMMUTABLE.match(relative)
            else "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        if ISOLATED.match(relative):
            headers.update(ISOLATION_HEADERS)
        media_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        accepted = request.headers.get("accept-encoding", "")
        for encoding, suffix in TWINS.items():
            compressed = path.with_name(path.name + suffix)
            if compressed.exists():
                headers["Vary"] = "Accept-Encoding"
                if encoding in accepted:
                    headers["Content-Encoding"] = encoding
                    path = compressed
                    break
        stat = path.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={**headers, "ETag": etag})
        return FileResponse(
            path, media_type=media_type, headers={**headers, "ETag": etag}, stat_result=stat
        )
