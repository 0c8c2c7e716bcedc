"""Strict validation of request bodies: a clear message naming the wrong field, or a clean dict.

>>> try:
...     parse_upload({"v": 1}, min_events=20)
... except ValidationError as error:
...     error.field, str(error)
('batch_id', 'batch_id is required: a string of 8 to 64 letters, digits, "-" or "_"')
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..browser.privacy import MECHANISM, gaussian_sigma
from ..core.priors import STATS_FORMAT, STATS_VERSION

__all__ = ["ValidationError", "parse_upload", "parse_rollback"]

BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_NAME = 128
MAX_SLOTS = 64
MAX_ACTIONS = 64
MAX_EVENTS = 1_000_000
MAX_ABS = 1e9
UPLOAD_FIELDS = {"v", "batch_id", "events", "schema", "privacy", "slots"}


class ValidationError(ValueError):
    """A request body is invalid; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _object(value: Any, field: str, keys: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"{field} must be an object, got {_kind(value)}")
    if keys is not None:
        unknown = sorted(set(value) - keys)
        if unknown:
            raise ValidationError(
                f"{field}.{unknown[0]}" if field else unknown[0],
                f"unknown field {unknown[0]!r} in {field or 'the body'}; expected {sorted(keys)}",
            )
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _number(value: Any, field: str, low: float = -MAX_ABS, high: float = MAX_ABS) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"{field} must be a number, got {_kind(value)}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(field, f"{field} = {value!r} must be between {low:g} and {high:g}")
    return float(value)


def _integer(value: Any) -> Any:
    """``value`` as an int if it is an integral number (JSON does not tell 20 from 20.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME:
        raise ValidationError(field, f"{field} must be a name of 1 to {MAX_NAME} characters")
    return value


def _pair(value: Any, field: str, names: tuple[str, str]) -> dict[str, float]:
    obj = _object(value, field, set(names))
    out = {}
    for name in names:
        if name not in obj:
            raise ValidationError(f"{field}.{name}", f"{field}.{name} is required (a number)")
        out[name] = _number(obj[name], f"{field}.{name}")
    return out


def parse_upload(body: Any, *, min_events: int) -> dict[str, Any]:
    """Validate an upload (see ``microadjust.browser.sync_client``); return it normalized."""
    body = _object(body, "", UPLOAD_FIELDS)
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
        raise ValidationError(
            "batch_id", 'batch_id is required: a string of 8 to 64 letters, digits, "-" or "_"'
        )
    if body.get("v") != 1:
        raise ValidationError(
            "v", f"v must be 1 (the upload format version), got {body.get('v')!r}"
        )
    events = _integer(body.get("events"))
    if type(events) is not int or not min_events <= events <= MAX_EVENTS:
        raise ValidationError(
            "events",
            f"events must be an integer between {min_events} (this site's minimum per upload) "
            f"and {MAX_EVENTS}, got {events!r}",
        )
    schema = _object(body.get("schema"), "schema", {"format", "version", "features"})
    if schema.get("format") != STATS_FORMAT or schema.get("version") != STATS_VERSION:
        raise ValidationError(
            "schema.format", f"schema must have format {STATS_FORMAT!r} and version {STATS_VERSION}"
        )
    features = _object(schema.get("features"), "schema.features")
    dim = _integer(features.get("dim"))
    if type(dim) is not int or not 2 <= dim <= 4096:
        raise ValidationError(
            "schema.features.dim", "schema.features.dim must be an int in [2, 4096]"
        )
    bias = _integer(features.get("bias_index", 0))
    if type(bias) is not int or not 0 <= bias < dim:
        raise ValidationError(
            "schema.features.bias_index", "schema.features.bias_index must be an int in [0, dim)"
        )
    if len(features) > 32 or not all(
        isinstance(k, str)
        and len(k) <= 64
        and isinstance(v, str | int | float)
        and not isinstance(v, bool)
        and len(str(v)) <= 64
        for k, v in features.items()
    ):
        raise ValidationError("schema.features", "schema.features must be a small flat object")
    privacy = _parse_privacy(body.get("privacy"))
    slots_in = _object(body.get("slots"), "slots")
    if not 1 <= len(slots_in) <= MAX_SLOTS:
        raise ValidationError("slots", f"slots must have 1 to {MAX_SLOTS} entries")
    slots = {}
    for slot, entry in slots_in.items():
        where = f"slots.{_name(slot, 'slots.<name>')}"
        entry = _object(entry, where, {"actions", "holdout", "ope"})
        for part in ("actions", "holdout", "ope"):
            if part not in entry:
                raise ValidationError(f"{where}.{part}", f"{where}.{part} is required")
        actions_in = _object(entry["actions"], f"{where}.actions")
        if not 1 <= len(actions_in) <= MAX_ACTIONS:
            raise ValidationError(
                f"{where}.actions", f"{where}.actions must have 1 to {MAX_ACTIONS} entries"
            )
        actions = {
            _name(a, f"{where}.actions.<name>"): _pair(
                v, f"{where}.actions.{a}", ("n", "reward_sum")
            )
            for a, v in actions_in.items()
        }
        slots[slot] = {
            "actions": actions,
            "holdout": _pair(entry["holdout"], f"{where}.holdout", ("n", "reward")),
            "ope": _pair(entry["ope"], f"{where}.ope", ("w", "wr")),
        }
    return {
        "v": 1,
        "batch_id": batch_id,
        "events": events,
        "schema": {
            "format": STATS_FORMAT,
            "version": STATS_VERSION,
            "features": {**features, "dim": dim, "bias_index": bias},
        },
        "privacy": privacy,
        "slots": slots,
    }


def _parse_privacy(value: Any) -> dict[str, Any]:
    keys = {"mechanism", "epsilon", "delta", "sigma", "ips_clip"}
    privacy = _object(value, "privacy", keys)
    if privacy.get("mechanism") != MECHANISM:
        raise ValidationError("privacy.mechanism", f"privacy.mechanism must be {MECHANISM!r}")
    for name in ("epsilon", "delta", "ips_clip"):
        if name not in privacy:
            raise ValidationError(f"privacy.{name}", f"privacy.{name} is required (a number)")
    epsilon = _number(privacy["epsilon"], "privacy.epsilon", 1e-6, 1.0)
    delta = _number(privacy["delta"], "privacy.delta", 1e-12, 1e-3)
    ips_clip = _number(privacy["ips_clip"], "privacy.ips_clip", 1.0, 1000.0)
    sigma = gaussian_sigma(epsilon, delta)
    declared = _number(privacy.get("sigma", sigma), "privacy.sigma", 0.0, MAX_ABS)
    if not math.isclose(declared, sigma, rel_tol=1e-6):
        raise ValidationError(
            "privacy.sigma",
            "privacy.sigma does not match the Gaussian mechanism for epsilon, delta",
        )
    return {
        "mechanism": MECHANISM,
        "epsilon": epsilon,
        "delta": delta,
        "sigma": sigma,
        "ips_clip": ips_clip,
    }


def parse_rollback(body: Any) -> int:
    """The ``version`` of a rollback request."""
    body = _object(body, "", {"version"})
    version = _integer(body.get("version"))
    if type(version) is not int or not 1 <= version <= 2**31 - 1:
        raise ValidationError(
            "version", f"version must be a published version number, got {version!r}"
        )
    return version
