"""Featurization: validated contexts and actions to hashed numeric vectors.

Each action of a ``rank`` call gets one vector of ``dim`` floats:

* index 0 is a constant bias of 1;
* numeric context values (``int``/``float``) hash their *name* and carry the value scaled
  online per name: by default (``scaling="rms"``) divided by the root mean square of the
  values seen so far for that name and clipped to [-3, 3]; with ``scaling="maxabs"`` divided
  by the largest absolute value seen so far (so it lies in [-1, 1]). State: a count and a sum
  of squares (or the largest absolute value) per numeric name, for at most
  ``max_scaled_names`` names (values of further names pass unscaled, clipped);
* strings hash ``"name=value"`` with value 1 (open-ended values stay within ``dim``);
* booleans hash ``"name=true"`` / ``"name=false"`` with value 1;
* an action's own features (when ``actions`` is a mapping) are hashed the same way in an
  ``"a:"`` namespace, and every context feature times every action feature is added as an
  interaction (like Vowpal Wabbit's ``-q ca``), vectorized with numpy.

Hashing is signed (a hash bit picks +1/-1, which keeps collisions unbiased) and stable
across processes and platforms (CRC-32, not Python's salted ``hash``).

>>> f = Featurizer(dim=16)
>>> ctx = f.parse({"device": "mobile", "dwell_s": 12.0}, "context")
>>> X = f.transform(ctx, None, 3)
>>> X.shape, float(X[0, 0])
((3, 16), 1.0)
>>> bool((X[0] == X[2]).all())
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidActions, InvalidContext

__all__ = ["Featurizer", "ParsedFeatures", "FEATURE_VERSION"]

FEATURE_VERSION = 1
_FNV_PRIME = np.uint64(16777619)
_MASK32 = np.uint64(0xFFFFFFFF)
_CACHE_LIMIT = 20_000


@dataclass(slots=True)
class ParsedFeatures:
    """A validated feature mapping: hashes, raw values, and which entries are numeric."""

    hashes: list[int]  # 32-bit CRC of each entry's key (for interactions)
    index: list[int]  # its index in the hashed vector, in [1, dim)
    values: list[float]  # its signed raw value (sign from the hash)
    numeric: list[tuple[int, str]]  # (position in the lists, feature name)


class Featurizer:
    """Validate feature mappings and turn them into hashed vectors (see module docs).

    Parameters: ``dim`` hashed dimension (including the bias), ``max_features`` largest
    number of entries in one context, ``max_key_length`` / ``max_string_length`` bounds on
    names and string values, ``interactions`` whether to add context x action features.
    """

    def __init__(
        self,
        dim: int = 64,
        max_features: int = 256,
        max_key_length: int = 128,
        max_string_length: int = 512,
        interactions: bool = True,
        max_scaled_names: int = 1024,
        scaling: str = "rms",
        clip: float = 3.0,
    ):
        self.dim = int(dim)
        self.max_features = int(max_features)
        self.max_key_length = int(max_key_length)
        self.max_string_length = int(max_string_length)
        self.interactions = bool(interactions)
        self.max_scaled_names = int(max_scaled_names)
        self.scaling = scaling
        self.clip = float(clip) if scaling == "rms" else 1.0
        # numeric name -> [count, sum of squares ("rms") or largest |value| ("maxabs")]
        self.scale: dict[str, list[float]] = {}
        self._cache: dict[str, int] = {}

    def schema(self) -> dict[str, object]:
        """The parameters that define the feature space (two spaces match iff equal)."""
        return {
            "version": FEATURE_VERSION,
            "dim": self.dim,
            "hash": "crc32-signed",
            "bias_index": 0,
            "numeric_scaling": self.scaling,
            "clip": self.clip,
            "interactions": "ca" if self.interactions else "",
        }

    # -- validation ---------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[int, int, float]:
        """``(crc32, index, sign)`` of a feature key (cached)."""
        hit = self._cache.get(key)
        if hit is None:
            h = zlib.crc32(key.encode("utf-8", "surrogatepass"))
            hit = (h, 1 + h % (self.dim - 1), -1.0 if h >> 31 else 1.0)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = hit
        return hit

    def parse(self, mapping: object, what: str, prefix: str = "") -> ParsedFeatures:
        """Validate one feature mapping; raise :class:`InvalidContext` naming the bad entry."""
        if not isinstance(mapping, Mapping):
            raise InvalidContext(
                f"{what} must be a mapping of name -> value, got {type(mapping).__name__}"
            )
        if len(mapping) > self.max_features:
            raise InvalidContext(
                f"{what} has {len(mapping)} entries, more than max_features={self.max_features}"
            )
        hashes: list[int] = []
        index: list[int] = []
        values: list[float] = []
        numeric: list[tuple[int, str]] = []
        max_key = self.max_key_length
        lookup = self._lookup
        cached = self._cache.get
        for key, value in mapping.items():
            if type(key) is not str or not key or len(key) > max_key:
                raise InvalidContext(
                    f"{what} key {key!r} must be a non-empty string of at most {max_key} characters"
                )
            t = type(value)
            if t is float or t is int:
                v = float(value)
                if v - v != 0.0:  # nan or infinite
                    raise InvalidContext(f"{what}[{key!r}] = {value!r} is not a finite number")
                feature = prefix + key if prefix else key
                numeric.append((len(values), feature))
            elif t is str:
                if len(value) > self.max_string_length:
                    raise InvalidContext(
                        f"{what}[{key!r}] is a string of {len(value)} characters, more than "
                        f"max_string_length={self.max_string_length}"
                    )
                feature, v = f"{prefix}{key}={value}", 1.0
            elif t is bool:
                feature, v = f"{prefix}{key}={'true' if value else 'false'}", 1.0
            else:  # numpy scalars and the like (rare): parse their plain Python values instead
                return self.parse(_plain_values(mapping, what), what, prefix)
            h, i, sign = cached(feature) or lookup(feature)
            hashes.append(h)
            index.append(i)
            values.append(sign * v)
        return ParsedFeatures(hashes, index, values, numeric)

    def parse_actions(
        self, actions: object, max_actions: int
    ) -> tuple[list[str], list[ParsedFeatures] | None]:
        """Validate ``actions`` (a sequence of ids, or a mapping id -> features)."""
        feats: list[ParsedFeatures] | None = None
        if isinstance(actions, Mapping):
            names = list(actions.keys())
            feats = []
        elif isinstance(actions, str | bytes) or not isinstance(actions, Sequence):
            raise InvalidActions(
                "actions must be a sequence of action ids or a mapping id -> features, got "
                f"{type(actions).__name__}"
            )
        else:
            names = list(actions)
        if not names:
            raise InvalidActions("actions is empty: give at least one action")
        if len(names) > max_actions:
            raise InvalidActions(f"{len(names)} actions, more than max_actions={max_actions}")
        for name in names:
            if type(name) is not str or not name or len(name) > self.max_key_length:
                raise InvalidActions(
                    f"action id {name!r} must be a non-empty string of at most "
                    f"{self.max_key_length} characters"
                )
        if len(set(names)) != len(names):
            seen: set[str] = set()
            dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
            raise InvalidActions(f"duplicate action id {dup!r}")
        if feats is not None:
            for name in names:
                try:
                    feats.append(
                        self.parse(actions[name], f"features of action {name!r}", "a:")  # type: ignore[index]
                    )
                except InvalidContext as exc:
                    raise InvalidActions(str(exc)) from None
        return names, feats

    # -- transformation (after validation; updates the online scaler) ----------------

    def observe(self, parsed: ParsedFeatures) -> None:
        """Update the online scaler with the numeric values of ``parsed``."""
        self._scale(parsed, learn=True)

    def observe_scaled(self, parsed: ParsedFeatures) -> np.ndarray:
        """:meth:`observe`, then the scaled values (in one pass)."""
        return self._scale(parsed, learn=True)

    def _scale(self, parsed: ParsedFeatures, learn: bool) -> np.ndarray:
        """The signed values of ``parsed`` with numbers scaled, after learning them if ``learn``."""
        if not parsed.numeric:
            return np.array(parsed.values)
        scale = self.scale
        rms = self.scaling == "rms"
        values = list(parsed.values)
        sqrt = math.sqrt
        limit = self.max_scaled_names
        for pos, name in parsed.numeric:
            v = values[pos]
            stat = scale.get(name)
            if learn:
                if stat is None:
                    if len(scale) >= limit:
                        continue  # an untracked name passes unscaled (then clipped)
                    stat = scale[name] = [0.0, 0.0]
                stat[0] += 1.0
                if rms:
                    stat[1] += v * v
                elif abs(v) > stat[1]:
                    stat[1] = abs(v)
            elif stat is None:
                continue
            sc = sqrt(stat[1] / stat[0]) if rms else stat[1]
            values[pos] = v / sc if sc > 0 else 0.0
        out = np.array(values)
        # clip with the two ufuncs: np.clip's Python wrapper costs more than the clipping
        return np.minimum(np.maximum(out, -self.clip, out=out), self.clip, out=out)

    def _pair_hashes(self, hc: list[int], ha: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Hash and vector index of each (context, action) feature pair, context-major."""
        h = ((np.array(hc, dtype=np.uint64)[:, None] * _FNV_PRIME)
             ^ np.array(ha, dtype=np.uint64)[None, :]) & _MASK32  # fmt: skip
        h = h.ravel()
        return h, (h % np.uint64(self.dim - 1) + np.uint64(1)).astype(np.intp)

    def _interactions(
        self, out: np.ndarray, hc: list[int], vc: np.ndarray, ha: list[int], va: np.ndarray
    ) -> None:
        h, idx = self._pair_hashes(hc, ha)
        sign = 1.0 - 2.0 * (h >> np.uint64(31)).astype(np.float64)
        # values carry their own hash signs already: undo them, then apply the pair's sign
        vc_raw = vc * np.array([-1.0 if x >> 31 else 1.0 for x in hc])
        va_raw = va * np.array([-1.0 if x >> 31 else 1.0 for x in ha])
        w = sign * (vc_raw[:, None] * va_raw[None, :]).ravel()
        out += np.bincount(idx, weights=w, minlength=self.dim)

    def transform(
        self,
        context: ParsedFeatures,
        action_features: list[ParsedFeatures] | None,
        n_actions: int,
        context_values: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return the ``(n_actions, dim)`` matrix of feature vectors.

        ``context_values`` are the context's scaled values if already computed (by
        :meth:`observe_scaled`).
        """
        vc = self._scale(context, learn=False) if context_values is None else context_values
        if context.index:
            xc = np.bincount(context.index, weights=vc, minlength=self.dim)
        else:
            xc = np.zeros(self.dim)
        xc[0] = 1.0
        if action_features is None:
            return np.repeat(xc[None, :], n_actions, axis=0)
        X = np.empty((n_actions, self.dim))
        for k, af in enumerate(action_features):
            row = xc.copy()
            if af.index:
                va = self._scale(af, learn=False)
                row += np.bincount(af.index, weights=va, minlength=self.dim)
                if self.interactions and context.index:
                    self._interactions(row, context.hashes, vc, af.hashes, va)
            X[k] = row
        return X

    def sources(
        self, context: Mapping[str, object], action: Mapping[str, object] | None = None
    ) -> dict[int, list[str]]:
        """Readable names of what lands on each index of the vector of (``context``,
        ``action``'s own features), validated inputs: ``"(bias)"``, ``"device=mobile"``, a
        number's name, ``"a:color=red"``, interactions as ``"device=mobile × a:color=red"``.
        Two names on one index are a hash collision. For explanations only (debug mode)."""
        names: dict[int, list[str]] = {0: ["(bias)"]}
        ctx = self.parse(context, "context")
        ctx_names = _readable(context, "")
        for i, name in zip(ctx.index, ctx_names, strict=True):
            names.setdefault(i, []).append(name)
        if action:
            act = self.parse(action, "action", "a:")
            act_names = _readable(action, "a:")
            for i, name in zip(act.index, act_names, strict=True):
                names.setdefault(i, []).append(name)
            if self.interactions and ctx.index:
                _, idx = self._pair_hashes(ctx.hashes, act.hashes)
                pairs = [f"{c} × {a}" for c in ctx_names for a in act_names]
                for i, name in zip(idx.tolist(), pairs, strict=True):
                    names.setdefault(i, []).append(name)
        return names


def _readable(mapping: Mapping[str, object], prefix: str) -> list[str]:
    """Each entry's display name, in the mapping's order: a number's name, else name=value."""
    out = []
    for key, value in mapping.items():
        if isinstance(value, bool):
            out.append(f"{prefix}{key}={'true' if value else 'false'}")
        elif isinstance(value, str):
            out.append(f"{prefix}{key}={value}")
        else:
            out.append(f"{prefix}{key}")
    return out


def _plain_values(mapping: Mapping[str, object], what: str) -> dict[str, float | int | str | bool]:
    """``mapping`` with every value a plain ``float``, ``int``, ``str`` or ``bool``."""
    plain = (float, int, str, bool)
    return {k: v if type(v) in plain else _coerce_other(v, what, k) for k, v in mapping.items()}


def _coerce_other(value: object, what: str, key: str) -> float | str | bool:
    """Accept numpy scalars and other real numbers; reject everything else."""
    name = type(value).__name__
    if name == "bool_" or name == "bool":
        return bool(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) or hasattr(value, "__float__") and hasattr(value, "dtype"):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise InvalidContext(
        f"{what}[{key!r}] has unsupported type {name} (expected float, int, str or bool)"
    )
