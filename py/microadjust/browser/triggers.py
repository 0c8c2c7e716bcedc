"""Threshold rules over behavioural signals, parsed by a small safe parser (no ``eval``).

Grammar (lowest precedence first)::

    expr    := and ( "||" and )*
    and     := not ( "&&" not )*
    not     := "!" not | compare
    compare := operand ( ("<" | "<=" | ">" | ">=" | "==" | "!=") operand )?
    operand := NUMBER | STRING | "true" | "false" | IDENT | "(" expr ")"

Numbers are decimal (``30``, ``0.25``, ``-1.5e3``), strings use double or single quotes
(``"mobile"``), identifiers are signal names (letters, digits, ``_`` and ``.``).
A bare identifier must name a boolean signal. ``==``/``!=`` compare any two values
(numbers with numbers, strings with strings, booleans with booleans; mixed kinds are never
equal); ordering comparisons need two numbers or two strings.

>>> t = parse_trigger('dwell_s > 30 && scroll_depth < 0.25')
>>> t({"dwell_s": 42, "scroll_depth": 0.1})
True
>>> t({"dwell_s": 12, "scroll_depth": 0.1})
False
>>> sorted(t.signals)
['dwell_s', 'scroll_depth']
>>> parse_trigger('device == "mobile" || !(returning)')({"device": "desktop", "returning": False})
True
>>> parse_trigger('dwell_s > > 3')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
microadjust.core.errors.InvalidTrigger: unexpected '>' at position 10 (expected a number, ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidTrigger, UnknownSignal

__all__ = ["Trigger", "parse_trigger"]

MAX_LENGTH = 4096
MAX_DEPTH = 64

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>&&|\|\||<=|>=|==|!=|<|>|!|\(|\))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")

Value = float | str | bool


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "num", "str", "op", "ident", "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = text[pos]
            if bad in "\"'":
                raise InvalidTrigger(
                    f"unterminated string starting at position {pos}: {text}", pos, text[pos:]
                )
            if bad in "&|=":
                msg = f"unexpected {bad!r} at position {pos} (did you mean '&&', '||' or '=='?)"
            else:
                msg = f"unexpected character {bad!r} at position {pos}"
            raise InvalidTrigger(f"{msg}: {text}", pos, bad)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# AST nodes are tuples: ("lit", value) | ("sig", name) | ("not", node)
# | ("and"/"or", node, node) | ("cmp", op, node, node); kept simple and picklable.
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, expected: str) -> InvalidTrigger:
        what = "end of expression" if tok.kind == "end" else repr(tok.text)
        return InvalidTrigger(
            f"unexpected {what} at position {tok.pos} (expected {expected}): {self.text}",
            tok.pos,
            tok.text,
        )

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, "'&&', '||', a comparison or end of expression")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            tok = self.peek()
            raise InvalidTrigger(
                f"expression nested too deeply at position {tok.pos}: {self.text}",
                tok.pos,
                tok.text,
            )
        node = self.conj()
        while self.peek().text == "||" and self.peek().kind == "op":
            self.take()
            node = ("or", node, self.conj())
        self.depth -= 1
        return node

    def conj(self) -> Node:
        node = self.neg()
        while self.peek().text == "&&" and self.peek().kind == "op":
            self.take()
            node = ("and", node, self.neg())
        return node

    def neg(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "!":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidTrigger(
                    f"expression nested too deeply at position {tok.pos}: {self.text}",
                    tok.pos,
                    tok.text,
                )
            node = ("not", self.neg())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op" and tok.text in _COMPARISONS:
            self.take()
            right = self.operand()
            if left[0] == "lit" and right[0] == "lit":
                _check_comparable(tok.text, left[1], right[1], self.text, tok.pos)
            node: Node = ("cmp", tok.text, left, right, tok.pos)
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text in _COMPARISONS:
                raise self.fail(nxt, "'&&' or '||' (chained comparisons need parentheses)")
            return node
        return left

    def operand(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            value = float(tok.text)
            if not math.isfinite(value):
                raise InvalidTrigger(
                    f"number {tok.text!r} at position {tok.pos} is not finite: {self.text}",
                    tok.pos,
                    tok.text,
                )
            return ("lit", value)
        if tok.kind == "str":
            return ("lit", _unquote(tok.text))
        if tok.kind == "ident":
            if tok.text == "true":
                return ("lit", True)
            if tok.text == "false":
                return ("lit", False)
            return ("sig", tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            close = self.take()
            if not (close.kind == "op" and close.text == ")"):
                raise self.fail(close, "')'")
            return node
        raise self.fail(tok, "a number, a string, a signal name or '('")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _check_comparable(op: str, a: Any, b: Any, text: str, pos: int) -> None:
    ka, kb = _kind(a), _kind(b)
    if op in ("==", "!="):
        return
    if ka != kb or ka not in ("number", "string"):
        raise InvalidTrigger(
            f"cannot order a {ka} and a {kb} with {op!r} near position {pos}: {text}", pos, op
        )


class Trigger:
    """A parsed trigger expression; call it (or :meth:`evaluate`) with a mapping of signals."""

    __slots__ = ("expression", "_ast", "signals")

    def __init__(self, expression: str):
        if not isinstance(expression, str):
            raise InvalidTrigger(f"a trigger must be a string, got {type(expression).__name__}")
        if len(expression) > MAX_LENGTH:
            raise InvalidTrigger(f"trigger longer than {MAX_LENGTH} characters")
        if not expression.strip():
            raise InvalidTrigger("empty trigger expression", 0, "")
        self.expression = expression
        self._ast = _Parser(expression).parse()
        names: set[str] = set()
        _collect(self._ast, names)
        self.signals: frozenset[str] = frozenset(names)

    def __repr__(self) -> str:
        return f"Trigger({self.expression!r})"

    def __call__(self, signals: Mapping[str, Any]) -> bool:
        return self.evaluate(signals)

    def evaluate(self, signals: Mapping[str, Any]) -> bool:
        """Evaluate against ``signals``; raise :class:`UnknownSignal` if one is missing."""
        if not isinstance(signals, Mapping):
            raise InvalidTrigger(f"signals must be a mapping, got {type(signals).__name__}")
        missing = sorted(self.signals.difference(signals.keys()))
        if missing:
            raise UnknownSignal(
                f"unknown signal {missing[0]!r} in trigger {self.expression!r} "
                f"(known signals: {sorted(map(str, signals.keys()))})",
                self.expression.find(missing[0]),
                missing[0],
            )
        result = self._eval(self._ast, signals)
        if not isinstance(result, bool):
            raise InvalidTrigger(
                f"trigger {self.expression!r} evaluates to a {_kind(result)}, not a boolean"
            )
        return result

    def _value(self, node: Node, signals: Mapping[str, Any]) -> Value:
        if node[0] == "lit":
            return node[1]
        if node[0] == "sig":
            raw = signals[node[1]]
            if isinstance(raw, bool | str):
                return raw
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise InvalidTrigger(
                    f"signal {node[1]!r} has unsupported type {type(raw).__name__} "
                    f"(expected a number, a string or a boolean)",
                    node[2],
                    node[1],
                ) from None
            if isinstance(raw, bool) or type(raw).__name__ == "bool_":
                return bool(raw)
            return value
        return self._eval(node, signals)

    def _eval(self, node: Node, signals: Mapping[str, Any]) -> Value:
        op = node[0]
        if op in ("lit", "sig"):
            return self._value(node, signals)
        if op == "not":
            return not self._bool(node[1], signals)
        if op == "and":
            return self._bool(node[1], signals) and self._bool(node[2], signals)
        if op == "or":
            return self._bool(node[1], signals) or self._bool(node[2], signals)
        # comparison
        _, cmp, left, right, pos = node
        a, b = self._value(left, signals), self._value(right, signals)
        ka, kb = _kind(a), _kind(b)
        if cmp == "==":
            return ka == kb and a == b
        if cmp == "!=":
            return not (ka == kb and a == b)
        _check_comparable(cmp, a, b, self.expression, pos)
        if cmp == "<":
            return a < b  # type: ignore[operator]
        if cmp == "<=":
            return a <= b  # type: ignore[operator]
        if cmp == ">":
            return a > b  # type: ignore[operator]
        return a >= b  # type: ignore[operator]

    def _bool(self, node: Node, signals: Mapping[str, Any]) -> bool:
        value = self._eval(node, signals)
        if not isinstance(value, bool):
            where = f" (signal {node[1]!r})" if node[0] == "sig" else ""
            raise InvalidTrigger(
                f"expected a boolean{where} but got a {_kind(value)} in trigger "
                f"{self.expression!r}; compare it, e.g. 'x > 0'",
                node[2] if node[0] == "sig" else None,
                node[1] if node[0] == "sig" else None,
            )
        return value


def _collect(node: Node, names: set[str]) -> None:
    if node[0] == "sig":
        names.add(node[1])
    elif node[0] == "not":
        _collect(node[1], names)
    elif node[0] in ("and", "or"):
        _collect(node[1], names)
        _collect(node[2], names)
    elif node[0] == "cmp":
        _collect(node[2], names)
        _collect(node[3], names)


def parse_trigger(expression: str) -> Trigger:
    """Parse ``expression`` into a :class:`Trigger` (raises :class:`InvalidTrigger`)."""
    return Trigger(expression)
