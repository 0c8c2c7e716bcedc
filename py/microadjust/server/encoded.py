"""A published priors version as a static file: serialized and compressed once (gzip, and
brotli when the ``brotli`` package is installed), then served from memory with its ETag, a
304 for a matching ``If-None-Match``, and ``Cache-Control`` a CDN can act on.

>>> prior = EncodedPrior.of(b'{"v":2}', '"abc"')
>>> prior.pick("gzip, deflate, br;q=0")
('gzip', ...)
>>> prior.pick("identity")[0] is None
True
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

try:
    import brotli
except ImportError:  # optional: gzip only
    brotli = None

__all__ = ["EncodedPrior", "etag_of"]


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _accepted(header: str) -> set[str]:
    """Content codings the client accepts (``q=0`` means refused)."""
    accepted = set()
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        q = params.strip()
        if q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        accepted.add(name.strip())
    return accepted


@dataclass(frozen=True, slots=True)
class EncodedPrior:
    """One priors body in every encoding we serve."""

    body: bytes
    etag: str
    gzip: bytes
    br: bytes | None

    @classmethod
    def of(cls, body: bytes, etag: str) -> EncodedPrior:
        packed_br = brotli.compress(body, quality=11) if brotli is not None else None
        return cls(body, etag, gzip.compress(body, 9, mtime=0), packed_br)

    def pick(self, accept_encoding: str) -> tuple[str | None, bytes]:
        """The best encoding the client accepts and the bytes to send."""
        accepted = _accepted(accept_encoding)
        if self.br is not None and "br" in accepted:
            return "br", self.br
        if "gzip" in accepted:
            return "gzip", self.gzip
        return None, self.body

    def response(self, request: Request, cache_control: str) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
        wanted = request.headers.get("if-none-match", "")
        if wanted.strip() == "*" or self.etag in wanted:
            return Response(status_code=304, headers=headers)
        encoding, payload = self.pick(request.headers.get("accept-encoding", ""))
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        return Response(payload, media_type="application/json", headers=headers)
