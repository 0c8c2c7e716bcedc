"""The sync API (FastAPI): priors down, bounded uploads up, admin controls and the report.

``create_app(settings, static=...)`` returns one ASGI app; ``serve.py --sync`` runs it with the
static bundle mounted at ``/``. The request and response types are in :mod:`.models`, which
FastAPI turns into ``/openapi.json``; the protocol is docs/sync-protocol.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from .. import __version__
from .aggregate import BucketRow, restrict, robust_totals
from .changepoint import since_last_change
from .config import SITE_NAME, SyncSettings
from .encoded import EncodedPrior, etag_of
from .groupcommit import GroupCommit
from .health import HealthCheck
from .hygiene import harden
from .models import (
    ErrorBody,
    FieldError,
    PriorsDocument,
    Purge,
    Rollback,
    SiteDeclaration,
    Upload,
    UploadAnswer,
    check_bounds,
)
from .publication import Rules, empty_document, priors_document
from .ratelimit import SharedBuckets, StoreUnavailable
from .release import DAY_S, Increment, Noised, capped_totals, decayed_sum, noisy_increment
from .report import render_html, site_report
from .security import (
    BodyTooLarge,
    client_address,
    is_admin,
    key_matches,
    read_limited,
    source_bucket,
)
from .singleflight import SingleFlight
from .storage import Received, Storage, day_of, dumps

__all__ = ["create_app", "ApiError"]

log = logging.getLogger("microadjust.server")
KEY_HEADER = "x-microadjust-key"
ADMIN_BODY_BYTES = 64 * 1024
Model = TypeVar("Model", bound=BaseModel)


class StrictJSONResponse(JSONResponse):
    """ASCII JSON that refuses NaN: a lone surrogate or a non-finite number never reaches a
    client as invalid JSON."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("ascii")


class ApiError(Exception):
    """An error answer: ``{"error": message, "field": field}`` with ``status``."""

    def __init__(self, status: int, message: str, field: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers

    def response(self) -> Response:
        body = {"error": self.message, "field": self.field}
        return StrictJSONResponse(body, self.status, headers=self.headers or None)


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a JSON path (``slots.cta.variants.quiz.shown``)."""
    return ".".join(str(p) for p in loc if p not in ("body", "[key]")) or "body"


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """The first pydantic error as a 422 naming its field (400 for JSON that does not parse)."""
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return ApiError(422, str(cause), cause.field)
    if first["type"] == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first['msg']}", "body")
    field = _path(tuple(first["loc"]))
    got = repr(first.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return ApiError(422, f"{field}: {first['msg']}; got {got}", field)


async def parse_body(request: Request, model: type[Model], limit: int) -> Model:
    """The JSON body as ``model``: 415, 413, 400 (unparsable) or 422 (invalid) otherwise."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "the body must be application/json", "content-type")
    try:
        raw = await read_limited(request, limit)
    except BodyTooLarge:
        raise ApiError(413, f"the body exceeds {limit} bytes", "body") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    except FieldError as exc:
        raise ApiError(422, str(exc), exc.field) from None


@dataclass(slots=True)
class CachedPrior:
    """What this instance serves for a site, and when it last looked at the store."""

    prior: EncodedPrior
    checked_at: float
    dirty: bool = False  # an upload arrived here since


class SyncAPI:
    """Request handlers bound to one settings object, one storage and one rate limiter."""

    def __init__(
        self,
        settings: SyncSettings,
        storage: Storage,
        clock: Callable[[], float],
        rng: np.random.Generator | None,
        buckets: SharedBuckets,
    ):
        self.settings = settings
        self.storage = storage
        self.buckets = buckets  # the site upload budgets, in the rate limits' shared store
        self.clock = clock
        self.rng = rng
        self.health_check = HealthCheck(storage, settings.limits.health_every_s)  # health.py
        self.rules = Rules(
            settings.max_shown,
            settings.period_s,
            settings.rho_per_release,
            settings.half_life_days,
        )
        self.sites: dict[str, SiteDeclaration] = dict(settings.sites)
        self._sites_loaded_at = -math.inf
        self._secrets: dict[int, bytes] = {}
        self._priors: dict[str, CachedPrior] = {}
        self._flights = SingleFlight()  # one store read for all the requests that need it
        self._uploads = GroupCommit(storage.record_uploads)  # one commit for concurrent uploads

    async def _db(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(partial(function, *args, **kwargs))

    # -- helpers ----------------------------------------------------------------------------

    async def _site(self, name: str) -> SiteDeclaration:
        """The declaration of site ``name`` (the sites file, overridden by the admin API)."""
        if self.clock() - self._sites_loaded_at >= self.settings.refresh_s:
            await self._flights.run("sites", self._reload_sites)
        site = self.sites.get(name)
        if site is None:
            raise ApiError(404, f"unknown site {name!r}", "site")
        return site

    async def _reload_sites(self) -> None:
        try:
            declared = await self._db(self.storage.declarations)
        except Exception:  # the store is down: the declarations known here still hold
            if self._sites_loaded_at == -math.inf:
                raise
            log.exception("reading the declared sites failed; using the ones known here")
        else:
            self.sites = {**self.settings.sites, **declared}
        self._sites_loaded_at = self.clock()

    def _admin(self, request: Request) -> None:
        if not is_admin(request, self.settings.admin_token):
            message = (
                "admin token required: Authorization: Bearer <token>"
                if self.settings.admin_token
                else "the admin API is disabled: start the server with --admin-token"
            )
            raise ApiError(401, message, **{"WWW-Authenticate": 'Basic realm="microadjust"'})

    async def _bucket(self, request: Request) -> int:
        day = day_of(self.clock())
        secret = self._secrets.get(day)
        if secret is None:
            secret = await self._flights.run(
                ("secret", day), partial(self._db, self.storage.day_secret, day)
            )
            self._secrets = {day: secret}
        return source_bucket(secret, client_address(request))

    async def _spend_upload_budget(self, site: str) -> None:
        """One upload from the site's budget, or 429: many addresses together store at most
        ``upload_budget`` uploads a period (each one alone is held by its own rate limit)."""
        rule = self.settings.upload_budget_rule
        try:
            refusal = await self.buckets.take([(f"budget:{site}", rule)])
        except StoreUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        if refusal is not None:
            retry = max(1, math.ceil(refusal[1]))
            raise ApiError(
                429,
                f"the upload budget of site {site!r} is spent: at most "
                f"{self.settings.upload_budget} uploads per {self.settings.period_s} s from all "
                f"addresses together; retry in {retry} s with the same batch",
                "upload_budget",
                **{"Retry-After": str(retry)},
            )

    def _horizon(self, now: float) -> float:
        """Increments older than 20 half-lives weigh less than 1e-6: publication skips them."""
        half_life = self.settings.half_life_days
        return 0.0 if not math.isfinite(half_life) else now - 20 * half_life * DAY_S

    async def _publish(self, name: str, note: str, automatic: bool) -> int | None:
        site = await self._site(name)
        now = self.clock()
        settings = self.settings
        sigma = self.rules.sigma_release(site)

        def release(rows: list[BucketRow]) -> Noised:
            totals = capped_totals(
                rows, bucket_cap=settings.bucket_cap, max_shown=settings.max_shown
            )
            rng = self.rng if self.rng is not None else np.random.default_rng()
            return noisy_increment(totals, site, sigma=sigma, rng=rng)

        def build(version: int, increments: list[Increment]) -> dict[str, Any]:
            half_life = settings.half_life_days
            recent = since_last_change(increments, now=now, half_life_days=half_life)
            released = decayed_sum(recent, now=now, half_life_days=half_life)
            return priors_document(
                name, site, released, self.rules, version=version, published_at=now
            )

        version = await self._db(
            self.storage.publish,
            name,
            release,
            build,
            note=note,
            keep=settings.keep_versions,
            horizon=self._horizon(now),
            min_interval_s=settings.publish_interval_s if automatic else None,
            now=now,
        )
        self._invalidate(name)
        return version

    async def _served(self, name: str, site: SiteDeclaration) -> EncodedPrior:
        """The prior to serve: from memory, re-read from the store (and re-published when due)
        at most every ``refresh_s``, or at once after an upload here when a publication is due."""
        cached = self._priors.get(name)
        if cached is not None and not self._stale(cached, self.clock()):
            return cached.prior
        return await self._flights.run(("prior", name), partial(self._reload_prior, name, site))

    async def _reload_prior(self, name: str, site: SiteDeclaration) -> EncodedPrior:
        cached = self._priors.get(name)
        try:
            prior = await self._load(name, site, cached)
        except Exception:
            if cached is None:
                raise
            log.exception("priors of %s: the store failed; serving the last good version", name)
            prior = cached.prior
        self._priors[name] = CachedPrior(prior, self.clock())
        return prior

    def _invalidate(self, name: str) -> None:
        """Re-read the store at the next request (the cached prior stays the fallback)."""
        if name in self._priors:
            self._priors[name].checked_at = -math.inf

    def _stale(self, cached: CachedPrior, now: float) -> bool:
        if now - cached.checked_at >= self.settings.refresh_s:
            return True
        return cached.dirty and now - cached.checked_at >= self.settings.publish_interval_s

    async def _load(
        self, name: str, site: SiteDeclaration, cached: CachedPrior | None
    ) -> EncodedPrior:
        state, published = await self._db(self.storage.serving, name)
        due = not state.frozen and state.aggregated_at > state.published_at
        if due and (
            published is None
            or self.clock() - state.published_at >= self.settings.publish_interval_s
        ):
            try:
                if await self._publish(name, "automatic", automatic=True):
                    state, published = await self._db(self.storage.serving, name)
            except Exception:  # a failed publication never stops serving the last good prior
                log.exception("publishing the priors of %s failed; serving the last version", name)
        if published is None:
            body = dumps(empty_document(name, site, self.rules)).encode()
            etag = etag_of(body)
        else:
            body, etag = published.body.encode(), published.etag
        if cached is not None and cached.prior.etag == etag:
            return cached.prior
        return await run_in_threadpool(EncodedPrior.of, body, etag)

    # -- public endpoints --------------------------------------------------------------------

    async def health(self) -> Response:
        health = await self._db(self.health_check)
        return StrictJSONResponse(health.body(), health.http_status)

    async def priors(self, site: str, request: Request) -> Response:
        declaration = await self._site(site)
        prior = await self._served(site, declaration)
        cache_control = (
            f"public, max-age={self.settings.cache_max_age_s}, "
            f"stale-while-revalidate={self.settings.stale_while_revalidate_s}"
        )
        return prior.response(request, cache_control)

    async def upload(self, site: str, request: Request) -> Response:
        declaration = await self._site(site)
        if not key_matches(request.headers.get(KEY_HEADER), declaration.key):
            raise ApiError(401, "missing or wrong upload key (header X-Microadjust-Key)", "key")
        upload = await parse_body(request, Upload, self.settings.max_body_bytes)
        try:
            check_bounds(upload, self.settings.max_shown)
        except FieldError as exc:
            raise ApiError(422, str(exc), exc.field) from None
        refused = {
            slot: reason
            for slot, entry in upload.slots.items()
            if (reason := declaration.refusal(slot, entry)) is not None
        }
        accepted = {slot: entry for slot, entry in upload.slots.items() if slot not in refused}
        duplicate = False
        if accepted:  # valid and something to store: now it may spend the budget, then write
            await self._spend_upload_budget(site)
            kept = upload.model_copy(update={"slots": accepted})
            bucket = await self._bucket(request)
            stored = await self._uploads.submit(Received(site, kept, bucket, self.clock()))
            duplicate = not stored
            if site in self._priors:
                self._priors[site].dirty = True
        answer = UploadAnswer(
            accepted=dict.fromkeys(accepted, "ok"), refused=refused, duplicate=duplicate
        )
        return StrictJSONResponse(answer.model_dump())

    # -- admin ----------------------------------------------------------------------------

    async def get_site(self, site: str, request: Request) -> Response:
        self._admin(request)
        declaration = await self._site(site)
        state = await self._db(self.storage.site_state, site)
        return StrictJSONResponse(
            {
                "site": site,
                "declaration": declaration.model_dump(),
                "current_version": state.current_version,
                "frozen": state.frozen,
                "uploads": await self._db(self.storage.upload_count, site),
                "versions": await self._db(self.storage.versions, site),
                "privacy": {
                    "rho_per_period": self.settings.rho_per_release,
                    "released_until": state.released_until,
                },
            }
        )

    async def put_site(self, site: str, request: Request) -> Response:
        self._admin(request)
        if not SITE_NAME.match(site):
            raise ApiError(422, f"site name {site!r} must match {SITE_NAME.pattern}", "site")
        declaration = await parse_body(request, SiteDeclaration, ADMIN_BODY_BYTES)
        await self._db(self.storage.declare, site, declaration, now=self.clock())
        self.sites[site] = declaration
        self._invalidate(site)
        return StrictJSONResponse({"site": site, **declaration.model_dump()})

    async def publish(self, site: str, request: Request) -> Response:
        self._admin(request)
        await self._site(site)
        try:
            version = await self._publish(site, "published by admin", automatic=False)
        except Exception as exc:
            log.exception("publishing the priors of %s failed", site)
            raise ApiError(
                503, f"publication failed ({exc}); the last version is still served"
            ) from None
        if version is None:
            raise ApiError(
                409,
                "another publication or a purge happened meanwhile; the last version is still "
                "served, retry",
            )
        return StrictJSONResponse({"site": site, "version": version})

    async def freeze(self, site: str, request: Request) -> Response:
        return await self._set_frozen(site, request, True)

    async def unfreeze(self, site: str, request: Request) -> Response:
        return await self._set_frozen(site, request, False)

    async def _set_frozen(self, site: str, request: Request, frozen: bool) -> Response:
        self._admin(request)
        await self._site(site)
        await self._db(self.storage.set_frozen, site, frozen)
        self._invalidate(site)
        return StrictJSONResponse({"site": site, "frozen": frozen})

    async def rollback(self, site: str, request: Request) -> Response:
        self._admin(request)
        await self._site(site)
        body = await parse_body(request, Rollback, ADMIN_BODY_BYTES)
        purged = await self._db(self.storage.rollback, site, body.version, now=self.clock())
        if purged is None:
            raise ApiError(422, f"site {site!r} has no published version {body.version}", "version")
        self._invalidate(site)
        return StrictJSONResponse(
            {"site": site, "version": body.version, "frozen": True, "purged_uploads": purged}
        )

    async def list_uploads(
        self,
        site: str,
        request: Request,
        since: Annotated[float, Query(ge=0, le=1e11)] = 0.0,
        until: Annotated[float, Query(ge=0, le=1e11)] = 1e11,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> Response:
        self._admin(request)
        await self._site(site)
        rows = await self._db(
            self.storage.list_uploads, site, since=since, until=until, limit=limit
        )
        return StrictJSONResponse(
            {
                "site": site,
                "uploads": [
                    {
                        "batch_id": r.batch_id,
                        "received_at": r.received_at,
                        "bucket": r.bucket,
                        "slots": r.slots,
                    }  # fmt: skip
                    for r in rows
                ],
            }
        )

    async def purge(self, site: str, request: Request) -> Response:
        self._admin(request)
        await self._site(site)
        body = await parse_body(request, Purge, ADMIN_BODY_BYTES)
        purged = await self._db(
            self.storage.purge,
            site,
            since=body.since,
            until=body.until,
            batch_ids=body.batch_ids,
            now=self.clock(),
        )
        self._invalidate(site)
        return StrictJSONResponse({"site": site, "purged_uploads": purged})

    async def rebuild(self, site: str, request: Request) -> Response:
        self._admin(request)
        await self._site(site)
        uploads = await self._db(self.storage.rebuild, site, now=self.clock())
        self._invalidate(site)
        return StrictJSONResponse({"site": site, "uploads": uploads})

    async def _report(self, name: str) -> dict[str, Any]:
        site = await self._site(name)
        rows = await self._db(self.storage.bucket_rows, name)
        state = await self._db(self.storage.site_state, name)
        totals = robust_totals(
            rows, bucket_cap=self.settings.bucket_cap, max_shown=self.settings.max_shown
        )
        uploads = await self._db(self.storage.upload_count, name)
        return site_report(
            name, site, restrict(totals, site.slots, set(site.cell_ids())), state, uploads
        )

    async def report_json(self, site: str, request: Request) -> Response:
        self._admin(request)
        return StrictJSONResponse(await self._report(site))

    async def report_html(self, request: Request, site: str | None = None) -> Response:
        self._admin(request)
        names = [site] if site is not None else sorted(self.sites)
        reports = [await self._report(name) for name in names]
        return HTMLResponse(render_html(reports), headers={"Cache-Control": "no-store"})


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "the body is not valid JSON"),
        (401, "missing or wrong key or admin token"),
        (404, "unknown site"),
        (413, "the body is too large"),
        (415, "the body is not application/json"),
        (422, "the body or a parameter is invalid; field names it"),
        (409, "a publication raced another instance's publication or a purge; retry"),
        (429, "rate-limited, or the site's upload budget is spent"),
        (503, "the store is unavailable"),
    )
}
BODIES = (Upload, SiteDeclaration, Rollback, Purge)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI request body referring to ``model`` (parsed by :func:`parse_body`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def create_app(
    settings: SyncSettings,
    *,
    static: ASGIApp | None = None,
    storage: Storage | None = None,
    clock: Callable[[], float] = time.time,
    rng: np.random.Generator | None = None,
) -> FastAPI:
    """The sync API (and, if given, the static bundle at ``/``) as one ASGI app.

    ``clock`` and ``rng`` are for simulations and tests (simulated days, reproducible noise).
    A simulation whose requests all come from one address (Starlette's TestClient) lands in one
    source bucket, which counts for ``bucket_cap`` visitors a day: give each simulated visitor
    its own address (``with_simulated_clients`` in bench/poison.py) or set ``bucket_cap=inf``.
    """
    storage = storage or Storage(
        data_dir=settings.data_dir, database_url=settings.database_url, max_shown=settings.max_shown
    )
    buckets = SharedBuckets(settings.database_url)  # rate limits and upload budgets
    api = SyncAPI(settings, storage, clock, rng, buckets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(storage.migrate)
        await run_in_threadpool(storage.match_bound)
        yield
        storage.close()

    app = FastAPI(
        title="microadjust sync API",
        version=__version__,
        description="Priors down, bounded uploads up (docs/sync-protocol.md, protocol v2).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=StrictJSONResponse,
        responses=ERRORS,
    )
    app.state.storage = storage
    app.state.api = api
    app.add_exception_handler(ApiError, lambda request, exc: exc.response())
    app.add_exception_handler(
        RequestValidationError, lambda request, exc: validation_error(list(exc.errors())).response()
    )

    def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            allowed = {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods
            }
            headers["Allow"] = ", ".join(sorted(allowed))
        return ApiError(exc.status_code, str(exc.detail), None, **headers).response()

    app.add_exception_handler(HTTPException, http_error)
    route = app.add_api_route
    route("/v1/health", api.health, methods=["GET"], summary="the store is reachable and migrated")
    route("/v1/sites/{site}/priors", api.priors, methods=["GET"], response_model=PriorsDocument,
          responses={304: {"description": "not modified (If-None-Match)"}},
          summary="the site's published priors (public)")  # fmt: skip
    route("/v1/sites/{site}/uploads", api.upload, methods=["POST"], response_model=UploadAnswer,
          openapi_extra=_body(Upload), summary="one browser's bounded upload")  # fmt: skip
    route("/v1/admin/sites/{site}", api.get_site, methods=["GET"], summary="declaration and state")
    route("/v1/admin/sites/{site}", api.put_site, methods=["PUT"],
          openapi_extra=_body(SiteDeclaration), summary="declare a site")  # fmt: skip
    route("/v1/admin/sites/{site}/publish", api.publish, methods=["POST"])
    route("/v1/admin/sites/{site}/freeze", api.freeze, methods=["POST"])
    route("/v1/admin/sites/{site}/unfreeze", api.unfreeze, methods=["POST"])
    route("/v1/admin/sites/{site}/rollback", api.rollback, methods=["POST"],
          openapi_extra=_body(Rollback))  # fmt: skip
    route("/v1/admin/sites/{site}/uploads", api.list_uploads, methods=["GET"])
    route("/v1/admin/sites/{site}/uploads/purge", api.purge, methods=["POST"],
          openapi_extra=_body(Purge))  # fmt: skip
    route("/v1/admin/sites/{site}/rebuild", api.rebuild, methods=["POST"])
    route("/v1/admin/sites/{site}/report", api.report_json, methods=["GET"])
    route("/report", api.report_html, methods=["GET"], summary="the report page (HTML)",
          responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})  # fmt: skip

    def openapi() -> dict[str, Any]:
        sites = sorted(api.sites)
        if app.openapi_schema is None or app.state.openapi_sites != sites:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in BODIES:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "site" and path.startswith("/v1/sites/"):
                            parameter["description"] = "a site declared on this server"
                            parameter["schema"] = {"type": "string", "enum": sites}
            app.state.openapi_sites = sites
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if static is not None:
        app.mount("/", static)
    if settings.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-Microadjust-Key", "If-None-Match"],
            expose_headers=["ETag"],
            max_age=600,
        )
    harden(app, settings, buckets)  # timeouts, body and JSON checks, rate limits (hygiene.py)
    return app
