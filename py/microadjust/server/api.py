"""The sync API (Starlette): priors down, noisy aggregates up, admin controls and the report.

``create_app(settings, static=...)`` returns one ASGI app; ``serve.py --sync`` runs it with
the static bundle mounted at ``/``. Endpoints are described in :mod:`.openapi`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from .aggregate import SchemaConflict, prior_stats
from .config import Site, SyncSettings
from .health import HealthCheck
from .hygiene import harden
from .openapi import spec
from .report import render_html, site_report
from .security import BodyTooLarge, is_admin, key_matches, read_limited
from .storage import Aggregate, Storage
from .validation import ValidationError, parse_rollback, parse_upload

__all__ = ["create_app"]

KEY_HEADER = "x-microadjust-key"


def error(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    """A JSON error body: ``{"error": message, "field": field}``."""
    return JSONResponse({"error": message, "field": field}, status, headers=headers or None)


class SyncAPI:
    """Request handlers bound to one settings object and one storage (rate limits: hygiene)."""

    def __init__(self, settings: SyncSettings, storage: Storage):
        self.settings = settings
        self.storage = storage
        self._gzipped: OrderedDict[str, bytes] = OrderedDict()  # etag -> gzipped priors
        self.health_check = HealthCheck(storage, settings.limits.health_every_s)  # health.py

    async def _db(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(partial(function, *args, **kwargs))

    # -- helpers ----------------------------------------------------------------------------

    def _site(self, request: Request) -> Site | None:
        return self.settings.sites.get(request.path_params["site"])

    def _admin(self, request: Request, site_required: bool = True) -> Response | None:
        if not is_admin(request, self.settings.admin_token):
            message = (
                "admin token required: Authorization: Bearer <token>"
                if self.settings.admin_token
                else "the admin API is disabled: start the server with --admin-token"
            )
            return error(401, message, **{"WWW-Authenticate": 'Basic realm="microadjust"'})
        if site_required and self._site(request) is None:
            return error(404, f"unknown site {request.path_params['site']!r}", "site")
        return None

    def _build(self, site: Site, version: int, aggregates: dict[str, Aggregate]) -> dict:
        slots = {}
        for slot, (data, _, _) in aggregates.items():
            stats = prior_stats(data, slot, self.settings.shrinkage)
            if stats is not None:
                slots[slot] = stats
        return {
            "site": site.name,
            "version": version,
            "published_at": time.time(),
            "slots": slots,
            "upload": {"min_events": site.min_events},
        }

    async def _publish(self, site: Site, note: str, automatic: bool) -> int | None:
        return await self._db(
            self.storage.publish,
            site.name,
            partial(self._build, site),
            note=note,
            min_interval_s=self.settings.publish_interval_s if automatic else None,
        )

    # -- public endpoints --------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        health = await self._db(self.health_check)
        return JSONResponse(health.body(), health.http_status)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(spec(list(self.settings.sites)))

    async def priors(self, request: Request) -> Response:
        site = self._site(request)
        if site is None:
            return error(404, f"unknown site {request.path_params['site']!r}", "site")
        state, current = await self._db(self.storage.serving, site.name)
        stale = not state["frozen"] and state["aggregated_at"] > state["published_at"]
        due = current is None or time.time() - state["published_at"] >= (
            self.settings.publish_interval_s
        )
        if stale and due and await self._publish(site, "automatic", automatic=True):
            state, current = await self._db(self.storage.serving, site.name)
        if current is None:
            body = json.dumps(
                {
                    "site": site.name,
                    "version": 0,
                    "published_at": None,
                    "slots": {},
                    "upload": {"min_events": site.min_events},
                }  # fmt: skip
            )
            etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        else:
            _, body, etag = current
        headers = {
            "ETag": etag,
            "Cache-Control": f"public, max-age={self.settings.cache_max_age_s}",
            "Vary": "Accept-Encoding",
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(
                self._gzip(etag, body),
                media_type="application/json",
                headers={**headers, "Content-Encoding": "gzip"},
            )
        return Response(body, media_type="application/json", headers=headers)

    def _gzip(self, etag: str, body: str) -> bytes:
        packed = self._gzipped.get(etag)
        if packed is None:
            packed = gzip.compress(body.encode(), 6)
            self._gzipped[etag] = packed
            while len(self._gzipped) > 64:
                self._gzipped.popitem(last=False)
        return packed

    async def upload(self, request: Request) -> Response:
        site = self._site(request)
        if site is None:
            return error(404, f"unknown site {request.path_params['site']!r}", "site")
        if not key_matches(request.headers.get(KEY_HEADER), site.key):
            return error(401, "missing or wrong upload key (header X-Microadjust-Key)", "key")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "the body must be application/json", "content-type")
        try:
            raw = await read_limited(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return error(413, f"the body exceeds {self.settings.max_body_bytes} bytes", "body")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not valid JSON: {exc}", "body")
        try:
            upload = parse_upload(body, min_events=site.min_events)
        except ValidationError as exc:
            return error(422, str(exc), exc.field)
        try:
            stored = await self._db(
                self.storage.record_upload,
                site.name,
                upload["batch_id"],
                upload,
                half_life_s=self.settings.half_life_days * 86400.0,
            )
        except SchemaConflict as exc:
            return error(409, str(exc), "schema")
        return JSONResponse(
            {"batch_id": upload["batch_id"], "status": "stored" if stored else "duplicate"},
            201 if stored else 200,
        )

    # -- admin ----------------------------------------------------------------------------

    async def admin_site(self, request: Request) -> Response:
        if denied := self._admin(request):
            return denied
        name = request.path_params["site"]
        state = await self._db(self.storage.site_state, name)
        versions = await self._db(self.storage.versions, name)
        uploads = await self._db(self.storage.upload_count, name)
        aggs = await self._db(self.storage.aggregates, name)
        return JSONResponse(
            {
                "site": name,
                **state,
                "uploads": uploads,
                "versions": versions,
                "slots": {
                    slot: {"uploads": n, "updated_at": t} for slot, (_, n, t) in aggs.items()
                },
            }
        )

    async def publish(self, request: Request) -> Response:
        if denied := self._admin(request):
            return denied
        version = await self._publish(self._site(request), "published by admin", automatic=False)
        return JSONResponse({"site": request.path_params["site"], "version": version})

    async def freeze(self, request: Request) -> Response:
        return await self._set_frozen(request, True)

    async def unfreeze(self, request: Request) -> Response:
        return await self._set_frozen(request, False)

    async def _set_frozen(self, request: Request, frozen: bool) -> Response:
        if denied := self._admin(request):
            return denied
        await self._db(self.storage.set_frozen, request.path_params["site"], frozen)
        return JSONResponse({"site": request.path_params["site"], "frozen": frozen})

    async def rollback(self, request: Request) -> Response:
        if denied := self._admin(request):
            return denied
        try:
            raw = await read_limited(request, 4096)
            version = parse_rollback(json.loads(raw))
        except BodyTooLarge:
            return error(413, "the body exceeds 4096 bytes", "body")
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, ValidationError):
                return error(422, str(exc), exc.field)
            return error(400, f"the body is not valid JSON: {exc}", "body")
        name = request.path_params["site"]
        if not await self._db(self.storage.rollback, name, version):
            return error(422, f"site {name!r} has no published version {version}", "version")
        return JSONResponse({"site": name, "version": version, "frozen": True})

    async def report_json(self, request: Request) -> Response:
        if denied := self._admin(request):
            return denied
        return JSONResponse(await self._report(request.path_params["site"]))

    async def _report(self, name: str) -> dict[str, Any]:
        aggs = await self._db(self.storage.aggregates, name)
        state = await self._db(self.storage.site_state, name)
        return site_report(name, aggs, state)

    async def report_html(self, request: Request) -> Response:
        if denied := self._admin(request, site_required=False):
            return denied
        wanted = request.query_params.get("site")
        if wanted is not None and wanted not in self.settings.sites:
            return error(404, f"unknown site {wanted!r}", "site")
        names = [wanted] if wanted else sorted(self.settings.sites)
        reports = [await self._report(name) for name in names]
        return HTMLResponse(render_html(reports), headers={"Cache-Control": "no-store"})


def create_app(
    settings: SyncSettings, *, static: ASGIApp | None = None, storage: Storage | None = None
) -> Starlette:
    """The sync API (and, if given, the static bundle at ``/``) as one ASGI app."""
    storage = storage or Storage(data_dir=settings.data_dir, database_url=settings.database_url)
    api = SyncAPI(settings, storage)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(storage.migrate)
        yield
        storage.close()

    routes: list[Any] = [
        Route("/v1/health", api.health, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/sites/{site}/priors", api.priors, methods=["GET"]),
        Route("/v1/sites/{site}/uploads", api.upload, methods=["POST"]),
        Route("/v1/admin/sites/{site}", api.admin_site, methods=["GET"]),
        Route("/v1/admin/sites/{site}/publish", api.publish, methods=["POST"]),
        Route("/v1/admin/sites/{site}/freeze", api.freeze, methods=["POST"]),
        Route("/v1/admin/sites/{site}/unfreeze", api.unfreeze, methods=["POST"]),
        Route("/v1/admin/sites/{site}/rollback", api.rollback, methods=["POST"]),
        Route("/v1/admin/sites/{site}/report", api.report_json, methods=["GET"]),
        Route("/report", api.report_html, methods=["GET"]),
    ]
    if static is not None:
        routes.append(Mount("/", app=static))
    middleware = []
    if settings.origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "X-Microadjust-Key", "If-None-Match"],
                expose_headers=["ETag"],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    harden(app, settings)  # timeouts, body and JSON checks, rate limits, headers (hygiene.py)
    app.state.storage = storage
    return app
