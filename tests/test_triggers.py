"""Trigger parser: grammar, evaluation, precise errors, and no eval."""

from __future__ import annotations

import pytest

from microadjust import InvalidTrigger, Trigger, UnknownSignal, parse_trigger

SIGNALS = {"dwell_s": 42.0, "scroll_depth": 0.1, "device": "mobile", "returning": False, "n": 3}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("dwell_s > 30 && scroll_depth < 0.25", True),
        ("dwell_s > 30 && scroll_depth >= 0.25", False),
        ('device == "mobile"', True),
        ("device == 'desktop'", False),
        ('device != "desktop"', True),
        ("!returning", True),
        ("!(dwell_s > 30)", False),
        ("returning || n == 3", True),
        ("returning || n == 3 && dwell_s < 10", False),  # && binds tighter than ||
        ("(returning || n == 3) && dwell_s > 10", True),
        ("n <= 3 && n >= 3 && n != 4", True),
        ("dwell_s > 4.2e1", False),
        ("scroll_depth > -1", True),
        ("returning == false", True),
        ("true", True),
        ("!!returning", False),
        ("device == 3", False),  # different kinds are never equal
        ("((((n == 3))))", True),
    ],
)
def test_evaluates(expr, expected):
    assert parse_trigger(expr)(SIGNALS) is expected


def test_signals_listed_and_repr():
    t = parse_trigger('dwell_s > 30 && device == "mobile" || !returning')
    assert t.signals == frozenset({"dwell_s", "device", "returning"})
    assert "dwell_s" in repr(t)
    assert isinstance(t, Trigger)


@pytest.mark.parametrize(
    ("expr", "position", "token"),
    [
        ("dwell_s > > 3", 10, ">"),
        ("dwell_s > 30 &&", 15, ""),
        ("dwell_s > 30 & scroll < 1", 13, "&"),
        ("dwell_s = 30", 8, "="),
        ("(dwell_s > 30", 13, ""),
        ("dwell_s > 30)", 12, ")"),
        ("dwell_s $ 30", 8, "$"),
        ("a < b < c", 6, "<"),
        ('"abc" < 3', 6, "<"),
        ("x == 'unterminated", 5, "'unterminated"),
        ("1 2", 2, "2"),
    ],
)
def test_errors_point_at_the_token(expr, position, token):
    with pytest.raises(InvalidTrigger) as info:
        parse_trigger(expr)
    err = info.value
    assert err.position == position
    assert err.token == token
    assert f"position {position}" in str(err) or "near position" in str(err)
    assert expr in str(err)


@pytest.mark.parametrize("expr", ["", "   ", "__import__('os').system('x')", "a.b()", "x; y"])
def test_rejects_code(expr):
    with pytest.raises(InvalidTrigger):
        parse_trigger(expr)


def test_unknown_signal_is_clear():
    t = parse_trigger("dwell_s > 30 && clicks > 2")
    with pytest.raises(UnknownSignal, match="unknown signal 'clicks'") as info:
        t({"dwell_s": 40})
    assert info.value.token == "clicks"
    assert isinstance(info.value, KeyError) and isinstance(info.value, InvalidTrigger)


def test_runtime_type_errors():
    with pytest.raises(InvalidTrigger, match="cannot order"):
        parse_trigger("device > 3")(SIGNALS)
    with pytest.raises(InvalidTrigger, match="expected a boolean"):
        parse_trigger("n && returning")(SIGNALS)
    with pytest.raises(InvalidTrigger, match="unsupported type"):
        parse_trigger("x > 1")({"x": [1]})
    with pytest.raises(InvalidTrigger):
        parse_trigger("x > 1")("not a mapping")  # type: ignore[arg-type]


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(InvalidTrigger, match="nested too deeply"):
        parse_trigger("(" * 500 + "x" + ")" * 500)
    with pytest.raises(InvalidTrigger, match="nested too deeply"):
        parse_trigger("!" * 500 + "x")
    with pytest.raises(InvalidTrigger):
        parse_trigger("x" * 10_000)


def test_strings_with_escapes():
    assert parse_trigger(r'q == "say \"hi\""')({"q": 'say "hi"'})


@pytest.mark.parametrize(
    ("expr", "signals", "expected"),
    [
        ("rage_clicks >= 1", {"rage_clicks": 0}, False),
        ("rage_clicks >= 1", {"rage_clicks": 2}, True),
        ("dead_clicks > 2 || rage_clicks > 0", {"dead_clicks": 3, "rage_clicks": 0}, True),
        ("exit_intent", {"exit_intent": True}, True),
        ("exit_intent && dwell_s > 10", {"exit_intent": True, "dwell_s": 4.0}, False),
        ("!exit_intent", {"exit_intent": False}, True),
        ("exit_intent == true", {"exit_intent": True}, True),
        ("scroll_back >= 2", {"scroll_back": 1}, False),
    ],
)
def test_the_behavioural_anomaly_signals_parse_and_evaluate(expr, signals, expected):
    trigger = parse_trigger(expr)
    assert trigger.signals == frozenset(signals)
    assert trigger(signals) is expected


def test_a_count_used_as_a_boolean_says_to_compare_it():
    with pytest.raises(InvalidTrigger, match="signal 'rage_clicks'.*compare it, e.g. 'x > 0'"):
        parse_trigger("rage_clicks && exit_intent")({"rage_clicks": 1, "exit_intent": True})
