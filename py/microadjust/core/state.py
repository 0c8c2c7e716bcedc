"""Serialization helpers: reading a saved state with errors that name the key path.

Every stateful part of the core writes itself with ``to_state()`` (plain JSON types) and reads
itself back with ``from_state(reader)``, where ``reader`` is a :class:`StateReader`: a view of
one node of the saved JSON that knows its path from the root. A wrong value raises
:class:`~microadjust.core.errors.InvalidState` saying where, what was expected and what came in
(scikit-learn style), so a broken browser copy can be diagnosed from the message alone.

>>> r = StateReader({"slots": {"cta": {"noise": None}}}, "engine")
>>> r["slots"].items()[0][1]["noise"].floats(3)
Traceback (most recent call last):
...
microadjust.core.errors.InvalidState: engine.slots['cta'].noise: expected a list of 3 floats, ...
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from functools import cache
from itertools import chain
from typing import Any

import numpy as np

from .errors import InvalidState

__all__ = ["StateReader", "sym_to_list", "json_features"]


def _describe(value: object) -> str:
    """A short description of what came in, for error messages."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return f"a mapping with keys {sorted(map(str, value))[:8]}"
    return f"a {type(value).__name__}"


class StateReader:
    """One node of a saved state, with its key path (``engine.slots['cta'].models``)."""

    __slots__ = ("value", "path")

    def __init__(self, value: Any, path: str):
        self.value = value
        self.path = path

    def error(self, expected: str) -> InvalidState:
        """The error for this node: where, what was expected and what came in."""
        return InvalidState(f"{self.path}: expected {expected}, got {_describe(self.value)}")

    def mapping(self) -> Mapping[str, Any]:
        if not isinstance(self.value, Mapping):
            raise self.error("a mapping")
        return self.value

    def __getitem__(self, key: str) -> StateReader:
        """The child at a fixed key (written ``.key`` in the path)."""
        node = self.mapping()
        if key not in node:
            raise InvalidState(f"{self.path}: expected a key {key!r}, got keys {sorted(node)}")
        return StateReader(node[key], f"{self.path}.{key}")

    def get(self, key: str) -> StateReader | None:
        """The child at ``key``, or ``None`` where it is absent (older states)."""
        node = self.mapping()
        return StateReader(node[key], f"{self.path}.{key}") if key in node else None

    def items(self) -> list[tuple[str, StateReader]]:
        """The children of a mapping keyed by data (slot or action names: ``['cta']``)."""
        return [(str(k), StateReader(v, f"{self.path}[{k!r}]")) for k, v in self.mapping().items()]

    def list(self, length: int | None = None) -> list[StateReader]:
        """The children of a list (``[0]``), optionally of a given length."""
        if not isinstance(self.value, list | tuple) or (
            length is not None and len(self.value) != length
        ):
            raise self.error("a list" if length is None else f"a list of {length} items")
        return [StateReader(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def float(self, optional: bool = False) -> float | None:
        v = self.value
        if optional and v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.error("a finite number" + (" or null" if optional else ""))
        return float(v)

    def int(self, low: int = 0) -> int:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise self.error(f"an integer >= {low}")
        return v

    def bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error("true or false")
        return self.value

    def str(self) -> str:
        if not isinstance(self.value, str):
            raise self.error("a string")
        return self.value

    def choice(self, options: tuple[str, ...]) -> str:
        if self.value not in options:
            raise self.error(f"one of {list(options)}")
        return self.value

    def floats(self, *shape: int) -> np.ndarray:
        """A nested list of finite floats of the given shape, as an array."""
        expected = f"a list of {' x '.join(map(str, shape))} floats"
        if shape and shape[0] == 0 and self.value == []:
            return np.zeros(shape)
        try:
            a = np.array(self.value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.error(expected) from None
        if a.shape != shape or not np.isfinite(a).all():
            raise self.error(expected)
        return a

    def symmetric(self, dim: int) -> np.ndarray:
        """A ``dim x dim`` symmetric matrix saved as its upper triangle (:func:`sym_to_list`).

        The triangle is read as one array (a restore reads dozens of these at boot, and one
        NumPy call per row was most of its time); only a broken one is read row by row, to
        name the row that is wrong."""
        rows = self.value
        upper = None
        if type(rows) is list and [len(r) if type(r) is list else -1 for r in rows] == list(
            range(dim, 0, -1)
        ):
            with contextlib.suppress(TypeError, ValueError):
                upper = np.fromiter(chain.from_iterable(rows), np.float64, dim * (dim + 1) // 2)
        if upper is None or not np.isfinite(upper).all():
            return self._symmetric_by_row(dim)
        upper_with_diagonal, strictly_upper = _triangle(dim)
        m = np.zeros((dim, dim))
        m[upper_with_diagonal] = upper  # row by row, as sym_to_list wrote it
        m[strictly_upper[::-1]] = m[strictly_upper]
        return m

    def _symmetric_by_row(self, dim: int) -> np.ndarray:
        """Row by row, each checked on its own: the error names the row that is wrong."""
        rows = self.list(dim)
        m = np.zeros((dim, dim))
        for i, row in enumerate(rows):
            m[i, i:] = row.floats(dim - i)
        iu = np.triu_indices(dim, 1)
        m[(iu[1], iu[0])] = m[iu]
        return m


@cache
def _triangle(dim: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The indices of a ``dim x dim`` upper triangle, with and without the diagonal."""
    return np.triu_indices(dim), np.triu_indices(dim, 1)


def sym_to_list(m: np.ndarray) -> list[list[float]]:
    """Upper triangle of a symmetric matrix, row by row (half the size of the full matrix)."""
    return [m[i, i:].tolist() for i in range(m.shape[0])]


def json_features(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-JSON copy of a validated feature mapping (numpy scalars to Python)."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        t = type(v)
        if t is float or t is int or t is str or t is bool:
            out[k] = v
        elif type(v).__name__ == "bool_":
            out[k] = bool(v)
        elif isinstance(v, str):
            out[k] = str(v)
        elif isinstance(v, int) or type(v).__name__.startswith(("int", "uint")):
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out
