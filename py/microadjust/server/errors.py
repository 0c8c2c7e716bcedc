"""``{"error", "field"}`` answers sent straight from ASGI middleware, before the app runs."""

from __future__ import annotations

import json

from starlette.types import Send

__all__ = ["send_error"]


async def send_error(
    send: Send, status: int, error: str, field: str | None, *headers: tuple[bytes, bytes]
) -> None:
    """Answer ``status`` with the API's error body (what was wrong, and in which field)."""
    body = json.dumps({"error": error, "field": field}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
