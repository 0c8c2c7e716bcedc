"""Parse an untrusted JSON body without letting its shape reach a 500.

Python's ``json.loads`` accepts what later code cannot digest: 30,000 nested arrays (a
``RecursionError`` in the parser or in any recursive validator), a 400-digit integer (an
``OverflowError`` once it meets a float), ``1e999`` and ``NaN`` (non-finite numbers that poison a
sum and make the next JSON the server writes invalid), ``"\\ud800"`` (a lone surrogate that no
UTF-8 encoder accepts). :func:`loads` refuses each of them with :class:`UnsafeJSON`, which names
the offending field, so the API answers 400 ``{"error", "field"}``.

>>> loads(b'{"a": [1, 2.5, "x"]}')
{'a': [1, 2.5, 'x']}
>>> loads(b'{"a": [NaN]}')
Traceback (most recent call last):
...
microadjust.server.safejson.UnsafeJSON: NaN is not a finite number; JSON numbers must be finite
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "UnsafeJSON", "loads"]

MAX_DEPTH = 32  # objects and arrays nested in each other; an upload needs 5
MAX_INT_DIGITS = 18  # every integer fits in a signed 64-bit column and converts to float exactly


class UnsafeJSON(ValueError):
    """A body that is not JSON the server can safely process; ``field`` is where it went wrong."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise UnsafeJSON(f"an integer has {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJSON(f"{text[:40]} overflows a float; JSON numbers must be finite")
    return value


def _refuse_constant(name: str) -> float:
    raise UnsafeJSON(f"{name} is not a finite number; JSON numbers must be finite")


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
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise UnsafeJSON(f"the JSON nests deeper than {max_depth} levels") from None
    except UnsafeJSON:
        raise
    except ValueError as exc:
        raise UnsafeJSON(f"the body is not valid JSON: {exc}") from None
    _check_shape(value, max_depth)
    return value
