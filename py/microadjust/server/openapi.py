"""The OpenAPI 3.1 description of the sync API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .validation import BATCH_ID, MAX_ABS, MAX_ACTIONS, MAX_EVENTS, MAX_NAME, MAX_SLOTS

_NUMBER = {"type": "number", "minimum": -MAX_ABS, "maximum": MAX_ABS}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}


def _pair(a: str, b: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [a, b],
        "additionalProperties": False,
        "properties": {a: _NUMBER, b: _NUMBER},
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ADMIN = [{"bearer": []}, {"basic": []}]
ADMIN_ERRORS = {"401": _error("missing or wrong admin token"), "404": _error("unknown site")}


def spec(sites: list[str]) -> dict[str, Any]:
    """The OpenAPI document of a server configured for ``sites``."""
    SITE = {  # noqa: N806 - a constant of this document
        "name": "site",
        "in": "path",
        "required": True,
        "description": "a site configured on this server",
        "schema": {"type": "string", "enum": sorted(sites)} if sites else {"type": "string"},
    }
    upload = {
        "type": "object",
        "additionalProperties": False,
        "required": ["v", "batch_id", "events", "schema", "privacy", "slots"],
        "properties": {
            "v": {"const": 1},
            "batch_id": {"type": "string", "pattern": BATCH_ID.pattern},
            "events": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
            "schema": {
                "type": "object",
                "required": ["format", "version", "features"],
                "additionalProperties": False,
                "properties": {
                    "format": {"const": "microadjust.stats"},
                    "version": {"const": 1},
                    "features": {
                        "type": "object",
                        "required": ["dim"],
                        "maxProperties": 32,
                        "additionalProperties": {
                            "type": ["string", "integer", "number"],
                            "maxLength": 64,
                        },
                        "properties": {
                            "dim": {"type": "integer", "minimum": 2, "maximum": 4096},
                            "bias_index": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
            "privacy": {
                "type": "object",
                "required": ["mechanism", "epsilon", "delta", "ips_clip"],
                "additionalProperties": False,
                "description": "The local-DP mechanism applied on the device "
                "(see microadjust.browser.privacy); sigma, if given, must match epsilon and delta.",
                "properties": {
                    "mechanism": {"const": "gaussian"},
                    "epsilon": {"type": "number", "minimum": 1e-6, "maximum": 1},
                    "delta": {"type": "number", "minimum": 1e-12, "maximum": 0.001},
                    "sigma": {"type": "number", "minimum": 0},
                    "ips_clip": {"type": "number", "minimum": 1, "maximum": 1000},
                },
            },
            "slots": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_SLOTS,
                "propertyNames": _NAME,
                "additionalProperties": {
                    "type": "object",
                    "required": ["actions", "holdout", "ope"],
                    "additionalProperties": False,
                    "properties": {
                        "actions": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": MAX_ACTIONS,
                            "propertyNames": _NAME,
                            "additionalProperties": _pair("n", "reward_sum"),
                        },
                        "holdout": _pair("n", "reward"),
                        "ope": _pair("w", "wr"),
                    },
                },
            },
        },
    }
    priors = {
        "type": "object",
        "required": ["site", "version", "slots", "upload"],
        "properties": {
            "site": {"type": "string"},
            "version": {"type": "integer", "minimum": 0},
            "published_at": {"type": ["number", "null"]},
            "slots": {
                "type": "object",
                "description": "slot -> statistics in the engine format (microadjust.core.priors)",
                "additionalProperties": {"type": "object"},
            },
            "upload": {
                "type": "object",
                "properties": {"min_events": {"type": "integer"}},
            },
        },
    }
    ack = {
        "type": "object",
        "required": ["batch_id", "status"],
        "properties": {
            "batch_id": {"type": "string"},
            "status": {"enum": ["stored", "duplicate"]},
        },
    }
    admin_post = {
        "parameters": [SITE],
        "security": ADMIN,
        "responses": {"200": _json({"type": "object"}), **ADMIN_ERRORS},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "microadjust sync API",
            "version": __version__,
            "description": "Model priors down, privacy-preserving aggregates up. Browsers "
            "fetch a site's priors and, with consent and without Global Privacy Control, "
            "upload noisy aggregates (local differential privacy, added on the device).",
        },
        "paths": {
            "/v1/health": {
                "get": {
                    "summary": "Liveness and storage status",
                    "responses": {"200": _json({"type": "object"})},
                }
            },
            "/v1/sites/{site}/priors": {
                "get": {
                    "summary": "The site's current priors (ETag, If-None-Match, Cache-Control)",
                    "parameters": [
                        SITE,
                        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json(priors),
                        "304": {"description": "not modified"},
                        "404": _error("unknown site"),
                        "429": _error("rate limited"),
                    },
                }
            },
            "/v1/sites/{site}/uploads": {
                "post": {
                    "summary": "Contribute one noisy batch (idempotent per batch_id)",
                    "parameters": [SITE],
                    "security": [{"uploadKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": upload}},
                    },
                    "responses": {
                        "201": _json(ack, "stored"),
                        "200": _json(ack, "already stored earlier (a retry)"),
                        "400": _error("not JSON"),
                        "401": _error("missing or wrong upload key"),
                        "404": _error("unknown site"),
                        "409": _error("the slot's statistics use another feature space"),
                        "413": _error("body too large"),
                        "415": _error("not application/json"),
                        "422": _error("invalid field (named in the message)"),
                        "429": _error("rate limited"),
                    },
                }
            },
            "/v1/admin/sites/{site}": {
                "get": {
                    "summary": "Site state: frozen, current version, versions, aggregates",
                    "parameters": [SITE],
                    "security": ADMIN,
                    "responses": {"200": _json({"type": "object"}), **ADMIN_ERRORS},
                }
            },
            "/v1/admin/sites/{site}/publish": {
                "post": {**admin_post, "summary": "Publish a new prior version now"}
            },
            "/v1/admin/sites/{site}/freeze": {
                "post": {**admin_post, "summary": "Keep serving the current version"}
            },
            "/v1/admin/sites/{site}/unfreeze": {
                "post": {**admin_post, "summary": "Resume automatic publishing"}
            },
            "/v1/admin/sites/{site}/rollback": {
                "post": {
                    **admin_post,
                    "summary": "Serve an earlier version again (and freeze)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["version"],
                                    "additionalProperties": False,
                                    "properties": {"version": {"type": "integer", "minimum": 1}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object"}),
                        "400": _error("not JSON"),
                        "413": _error("body too large"),
                        "422": _error("invalid or unknown version"),
                        **ADMIN_ERRORS,
                    },
                }
            },
            "/v1/admin/sites/{site}/report": {
                "get": {
                    "summary": "Per slot and variant: decisions, reward rate, lift, OPE (JSON)",
                    "parameters": [SITE],
                    "security": ADMIN,
                    "responses": {"200": _json({"type": "object"}), **ADMIN_ERRORS},
                }
            },
            "/report": {
                "get": {
                    "summary": "The report as an HTML page with plots",
                    "parameters": [
                        {"name": "site", "in": "query", "schema": SITE["schema"]},
                    ],
                    "security": ADMIN,
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {}}},
                        **ADMIN_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "uploadKey": {"type": "apiKey", "in": "header", "name": "X-Microadjust-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                    },
                }
            },
        },
    }
