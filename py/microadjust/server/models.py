"""The sync protocol v2 as types (docs/sync-protocol.md): the site declaration, the upload, the
priors document and the admin bodies. FastAPI publishes them as ``/openapi.json``; every request
body is validated against them, so the document and the checks cannot drift apart.

What a type cannot know (the server's ``max_shown``, the site's declared slots) is checked
after parsing, by :func:`check_bounds` and :meth:`SiteDeclaration.refusal`.

>>> site = SiteDeclaration(key="key-12345", slots={"cta": ["default", "quiz"]},
...                        cells={"device": ["desktop", "mobile"]})
>>> site.cell_ids()
['*', 'device=desktop', 'device=mobile', 'device=other']
>>> site.refusal("cta", SlotUpload(cell="device=mobile", variants={"deal": Counts()}))
"variant 'deal' is not declared for slot 'cta'; declared: ['default', 'quiz']"
>>> site.refusal("cta", SlotUpload(cell="device=tv", variants={})).split(";")[0]
"cell 'device=tv' is not a declared cell of this site"
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..browser.privacy import local_range, local_sigma

__all__ = [
    "NAME_PATTERN",
    "BATCH_ID_PATTERN",
    "SiteDeclaration",
    "Counts",
    "SlotUpload",
    "Privacy",
    "Upload",
    "UploadAnswer",
    "Rollback",
    "Purge",
    "ErrorBody",
    "PriorsDocument",
    "FieldError",
    "check_bounds",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
BATCH_ID_PATTERN = r"^[0-9a-f]{32}$"
CELL_PATTERN = r"^(\*|[A-Za-z0-9_.:=,-]{1,400})$"
MAX_SLOTS = 64
MAX_VARIANTS = 64
MAX_CELL_KEYS = 3
MAX_CELL_VALUES = 8
MAX_CELLS = 256
OTHER = "other"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
FiniteNumber = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False, strict=True)]


class Strict(BaseModel):
    """Unknown fields are errors; numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


class FieldError(ValueError):
    """A request body breaks a rule the types cannot state; ``field`` is the JSON path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# -- the site declaration (section 1) ----------------------------------------------------------


class SiteDeclaration(Strict):
    """What a site is: its public upload key, its slots and variants, its context cells."""

    key: Annotated[str, StringConstraints(min_length=8, max_length=256)]
    slots: dict[Name, Annotated[list[Name], Field(min_length=1, max_length=MAX_VARIANTS)]] = Field(
        default_factory=dict, max_length=MAX_SLOTS
    )
    cells: dict[Name, Annotated[list[Name], Field(min_length=1, max_length=MAX_CELL_VALUES)]] = (
        Field(default_factory=dict, max_length=MAX_CELL_KEYS)
    )

    @model_validator(mode="after")
    def _consistent(self) -> SiteDeclaration:
        for slot, variants in self.slots.items():
            if len(set(variants)) != len(variants):
                raise ValueError(f"slots.{slot} lists a variant twice: {variants}")
        for key, values in self.cells.items():
            if len(set(values)) != len(values) or OTHER in values:
                raise ValueError(
                    f"cells.{key} must list distinct values other than {OTHER!r} "
                    f"(it is implicit), got {values}"
                )
        if math.prod(len(v) + 1 for v in self.cells.values()) > MAX_CELLS:
            raise ValueError(f"the cells multiply to more than {MAX_CELLS} (counting 'other')")
        return self

    def cell_ids(self) -> list[str]:
        """``*`` then every declared cell id, in declaration order."""
        if not self.cells:
            return ["*"]
        axes = [
            [f"{key}={value}" for value in (*values, OTHER)] for key, values in self.cells.items()
        ]
        return ["*", *(",".join(parts) for parts in itertools.product(*axes))]

    def has_cell(self, cell: str) -> bool:
        if not self.cells:
            return cell == "*"
        parts = cell.split(",")
        if len(parts) != len(self.cells):
            return False
        for part, (key, values) in zip(parts, self.cells.items(), strict=True):
            name, _, value = part.partition("=")
            if name != key or (value not in values and value != OTHER):
                return False
        return True

    def refusal(self, slot: str, upload: SlotUpload) -> str | None:
        """Why a slot of an upload is refused (undeclared slot, variant or cell), or None."""
        variants = self.slots.get(slot)
        if variants is None:
            return f"slot {slot!r} is not declared for this site"
        unknown = sorted(set(upload.variants) - set(variants))
        if unknown:
            return f"variant {unknown[0]!r} is not declared for slot {slot!r}; declared: {variants}"
        if not self.has_cell(upload.cell):
            expected = self.cell_ids()[1:] or ["*"]
            return (
                f"cell {upload.cell!r} is not a declared cell of this site; expected one of "
                f"{expected[:8]}{' …' if len(expected) > 8 else ''}"
            )
        return None


# -- the upload (sections 2-3) -----------------------------------------------------------------


class Counts(Strict):
    """Exposures and reward units of one variant (or of the holdout) in one upload."""

    shown: FiniteNumber = 0.0
    reward: FiniteNumber = 0.0


class SlotUpload(Strict):
    """One slot's contribution: its cell, per-variant counts, the holdout's counts."""

    cell: Annotated[str, StringConstraints(pattern=CELL_PATTERN)]
    variants: dict[Name, Counts] = Field(max_length=MAX_VARIANTS)
    holdout: Counts = Counts()


class Privacy(Strict):
    """``aggregate`` (exact small integers, noise added centrally) or ``local`` (noisy)."""

    mode: Literal["aggregate", "local"] = "aggregate"
    epsilon: Annotated[float, Field(ge=0.1, le=10.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _epsilon_iff_local(self) -> Privacy:
        if (self.mode == "local") != (self.epsilon is not None):
            raise FieldError(
                "privacy.epsilon",
                f"privacy.epsilon is required with mode 'local' and forbidden with mode "
                f"'aggregate'; got mode {self.mode!r} with epsilon {self.epsilon!r}",
            )
        return self

    def noise_sd(self, max_shown: int) -> float:
        """The noise the device put on each number: ``local_sigma`` in local mode, else 0."""
        return 0.0 if self.epsilon is None else local_sigma(self.epsilon, max_shown)


class Upload(Strict):
    """One batch from one browser: no identifier, no event, only bounded per-slot counts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "v": 2,
                    "batch_id": "9f2c4e0a7b1d4c3e8a5f6b7c8d9e0f1a",
                    "privacy": {"mode": "aggregate"},
                    "slots": {
                        "cta": {
                            "cell": "device=mobile,referrer=search,returning=false",
                            "variants": {
                                "quiz": {"shown": 1, "reward": 0},
                                "deal": {"shown": 0, "reward": 1},
                            },
                            "holdout": {"shown": 0, "reward": 0},
                        }
                    },
                }
            ]
        }
    )

    v: Literal[2]
    batch_id: Annotated[str, StringConstraints(pattern=BATCH_ID_PATTERN)]
    privacy: Privacy = Privacy()
    slots: dict[Name, SlotUpload] = Field(min_length=1, max_length=MAX_SLOTS)


def check_bounds(upload: Upload, max_shown: int) -> None:
    """Raise :class:`FieldError` unless every count lies within one visitor's contribution."""
    local = upload.privacy.mode == "local"
    # a local value lies where the device's noise puts it (the protocol's [-T, max_shown + T])
    low, high = local_range(upload.privacy.epsilon, max_shown) if local else (0.0, max_shown)
    for slot, entry in upload.slots.items():
        named = [(f"slots.{slot}.variants.{v}", c) for v, c in entry.variants.items()]
        named.append((f"slots.{slot}.holdout", entry.holdout))
        for path, counts in named:
            for name in ("shown", "reward"):
                value = getattr(counts, name)
                if not low <= value <= high:
                    raise FieldError(
                        f"{path}.{name}",
                        f"{path}.{name} = {value!r} is outside [{low:g}, {high:g}]: one "
                        "visitor contributes at most "
                        f"max_shown = {max_shown} per slot",
                    )
                if name == "shown" and not local and not float(value).is_integer():
                    raise FieldError(
                        f"{path}.shown", f"{path}.shown = {value!r} must be an integer count"
                    )
        if not local:
            for name in ("shown", "reward"):
                total = sum(getattr(c, name) for _, c in named)
                if total > max_shown:
                    raise FieldError(
                        f"slots.{slot}",
                        f"slots.{slot}: the {name} counts sum to {total:g}, more than one "
                        f"visitor's max_shown = {max_shown} per slot",
                    )


class UploadAnswer(BaseModel):
    """Which slots were taken and which refused (and why); ``duplicate`` for a repeated batch."""

    accepted: dict[str, Literal["ok"]]
    refused: dict[str, str]
    duplicate: bool


# -- admin bodies ------------------------------------------------------------------------------


class Rollback(Strict):
    """Serve an earlier version again (and drop the uploads received after it)."""

    version: Annotated[int, Field(ge=1, le=2**53)]


class Purge(Strict):
    """Uploads to delete: received in ``[since, until)`` and/or with one of ``batch_ids``."""

    since: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = None
    until: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = None
    batch_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(pattern=BATCH_ID_PATTERN)]],
            Field(max_length=1000),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _selects_something(self) -> Purge:
        if self.since is None and self.until is None and self.batch_ids is None:
            raise FieldError("since", "give since and/or until (unix seconds), or batch_ids")
        return self


class ErrorBody(BaseModel):
    """Every error: what was wrong, and the JSON path (or header) it was about."""

    error: str
    field: str | None


# -- the priors document (section 6) -----------------------------------------------------------


class PublishedCounts(BaseModel):
    shown: float
    reward: float
    # present where local-mode uploads added their devices' noise: all the noise of each count
    sigma: float | None = None


class PublishedSlot(BaseModel):
    variants: list[str]
    cells: dict[str, dict[str, PublishedCounts]]


class UploadRules(BaseModel):
    max_shown: int
    period_s: int
    default_mode: Literal["aggregate", "local"]
    modes: list[Literal["aggregate", "local"]]


class PublicationPrivacy(BaseModel):
    mechanism: Literal["central-gaussian-zcdp-increments"]
    rho_per_period: float  # zCDP of everything ever published about one visitor-period
    epsilon_per_period: float  # the same as (epsilon, delta)-DP
    delta: float
    sigma: float  # central noise (standard deviation) of each published count
    sigma_release: float  # noise of each count of one released increment


class PriorsDocument(BaseModel):
    """What ``GET /v1/sites/{site}/priors`` returns (``version`` 0: nothing published yet)."""

    v: Literal[2]
    site: str
    version: int
    published_at: str | None
    cells: dict[str, list[str]]
    upload: UploadRules
    privacy: PublicationPrivacy
    slots: dict[str, PublishedSlot]
