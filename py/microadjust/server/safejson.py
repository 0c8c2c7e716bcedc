"""Parse an untrusted JSON body without letting its shape reach a 500.

Python's ``json.loads`` accepts what later code cannot digest: 30,000 nested arrays (a
``RecursionError`` in the parser or in any recursive validator), a 400-digit integer (an
``OverflowError`` once it meets a float), ``1e999`` and ``NaN`` (non-finite numbers that poison a
sum and make the next JSON the server writes invalid), ``"\\ud800"`` (a lone surrogate that no
UTF-8 encoder accepts). :func:`loads` refuses each of them with :class:`UnsafeJSON`, which names
the offending field and the status to answer: 400 ``{"error", "field"}`` for what is not JSON
the server can parse, 422 for a number out of range (non-finite), as any out-of-range value.

>>> loads(b'{"a": [1, 2.5, "x"]}')
{'a': [1, 2.5, 'x']}
>>> loads(b'{"a": [NaN]}')
Traceback (most recent call last):
...
microadjust.server.safejson.UnsafeJSON: a[0]: NaN is not a finite number; numbers must be finite
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "UnsafeJSON", "loads"]

MAX_DEPTH = 32  # objects and arrays nested in each other; an upload needs 5
MAX_INT_DIGITS = 18  # every integer fits in a signed 64-bit column and converts to float exactly


class UnsafeJSON(ValueError):
    """A body that is not JSON the server can safely process; ``field`` is where it went wrong,
    ``status`` what to answer (400 unparsable, 422 a value out of range)."""

    def __init__(self, message: str, field: str = "body", status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class _NonFinite:
    """Stands for ``NaN``, ``Infinity`` or an overflowing number until its field is known."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise UnsafeJSON(f"an integer has {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text[:40])


def _check_text(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSON(
            "a string contains a lone surrogate (e.g. \\ud800 without its pair), "
            "which is not valid Unicode",
            field,
        ) from None


def _check_shape(value: Any, max_depth: int) -> None:
    """Depth and text of every nested value, iteratively (no recursion on hostile input)."""
    stack: list[tuple[Any, str, int]] = [(value, "body", 0)]
    while stack:
        item, field, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, field)
            continue
        if isinstance(item, _NonFinite):
            raise UnsafeJSON(
                f"{field}: {item.text} is not a finite number; numbers must be finite", field, 422
            )
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            raise UnsafeJSON(f"the JSON nests deeper than {max_depth} levels", field)
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, field)
                stack.append((child, key if field == "body" else f"{field}.{key}", depth + 1))
        else:
            for index, child in enumerate(item):
                stack.append((child, f"{field}[{index}]", depth + 1))


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``raw`` (strict UTF-8), or :class:`UnsafeJSON` saying what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsafeJSON(
                f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    try:
        value = json.loads(
            raw,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_NonFinite,
        )
    except RecursionError:
        raise UnsafeJSON(f"the JSON nests deeper than {max_depth} levels") from None
    except UnsafeJSON:
        raise
    except ValueError as exc:
        raise UnsafeJSON(f"the body is not valid JSON: {exc}") from None
    _check_shape(value, max_depth)
    return value
