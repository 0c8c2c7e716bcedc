"""Property-based tests: any rejected call leaves the state exactly as it was."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microadjust import Engine, MicroadjustError

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.booleans(),
    st.text(max_size=20),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=4),
)
contexts = st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), scalars, max_size=8)
action_lists = st.one_of(
    st.lists(st.one_of(st.text(max_size=6), st.integers(), st.none()), max_size=6),
    st.dictionaries(
        st.text(max_size=6), st.dictionaries(st.text(max_size=6), scalars, max_size=3), max_size=4
    ),  # fmt: skip
    st.text(max_size=5),
)


def make_engine() -> Engine:
    eng = Engine(seed=0, holdout=0.1, max_pending=8, attribution_window_s=100.0)
    for t in range(12):
        dec = eng.rank({"device": "mobile", "x": float(t)}, ["a", "b", "c"], now=float(t))
        if t % 2:
            eng.reward(dec.event_id, 1.0, now=float(t))
    return eng


BASE = make_engine()
BASE_STATE = json.dumps(BASE.state(), sort_keys=True)


def valid_value(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, bool | int | str) and (not isinstance(v, str) or len(v) <= 512)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    context=contexts, actions=action_lists, slot=st.one_of(st.just("default"), st.text(max_size=3))
)
def test_rank_either_succeeds_or_changes_nothing(context, actions, slot):
    eng = Engine.from_state(json.loads(BASE_STATE))
    try:
        dec = eng.rank(context, actions, slot=slot, now=20.0)
    except MicroadjustError:
        assert json.dumps(eng.state(), sort_keys=True) == BASE_STATE
    else:
        assert 0 < dec.probability <= 1
        json.dumps(eng.state(), allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    event=st.one_of(st.text(max_size=12), st.integers(), st.none()),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none()),
    now=st.floats(min_value=0, max_value=1e4),
)
def test_reward_either_succeeds_or_changes_nothing(event, value, now):
    eng = Engine.from_state(json.loads(BASE_STATE))
    pending = [e for e, _ in eng.state()["pending"]]
    for eid in [event, *pending[:1]]:
        before = json.dumps(eng.state(), sort_keys=True)
        try:
            eng.reward(eid, value, now=now)  # type: ignore[arg-type]
        except MicroadjustError:
            assert json.dumps(eng.state(), sort_keys=True) == before
