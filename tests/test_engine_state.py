"""Saved engine states: old versions still load bit-exact, and bad ones name the wrong key path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from microadjust import Engine, InvalidState
from microadjust.core.engine import STATE_VERSION

SAVED_V1 = json.loads((Path(__file__).parent / "fixtures" / "engine_state_v1.json").read_text())


def busy_engine() -> Engine:
    """An engine with two slots, a prior, pending decisions and a log."""
    eng = Engine(seed=4, dim=8, holdout=0.1, cooldown_s=1.0)
    for t in range(30):
        actions = ["a", "b"] if t % 2 else {"a": {"price": 1.0}, "b": {"price": 2.0}}
        dec = eng.rank({"device": "mobile", "n": t / 30}, actions, slot="cta", now=float(t))
        if t % 3:
            eng.reward(dec.event_id, 1.0, now=float(t))
    eng.set_prior("hero", {**eng.stats("cta"), "slot": "hero"}, 0.5)
    eng.rank({"device": "desktop"}, ["a", "b"], slot="hero", now=31.0)
    return eng


def test_a_version_1_state_loads_and_makes_the_decisions_it_made_when_saved():
    eng = Engine.from_state(SAVED_V1["state"])
    made = []
    for t in range(40, 50):
        dec = eng.rank({"device": "mobile", "scroll": 0.5}, ["eco", "premium"], slot="hero",
                       now=float(t))  # fmt: skip
        eng.reward(dec.event_id, 1.0, now=float(t))
        made.append([dec.action, dec.probability, dec.event_id, dec.reason])
    assert made == SAVED_V1["next"]


def test_a_version_1_state_is_migrated_to_the_current_version():
    assert SAVED_V1["state"]["version"] == 1 and STATE_VERSION == 2
    old_log = SAVED_V1["state"]["log"]
    eng = Engine.from_state(copy.deepcopy(SAVED_V1["state"]))
    state = eng.state()
    assert state["version"] == STATE_VERSION
    # old records carry no event id; everything else is kept as it was
    assert [r["event_id"] for r in state["log"]] == [None] * len(old_log)
    assert [{k: v for k, v in r.items() if k != "event_id"} for r in state["log"]] == old_log
    without_log = {k: v for k, v in state.items() if k not in ("log", "version")}
    assert without_log == {
        k: v for k, v in SAVED_V1["state"].items() if k not in ("log", "version")
    }
    assert Engine.from_state(state).state() == state


def test_the_log_carries_event_ids_in_reward_order():
    eng = Engine(seed=0)
    first = eng.rank({"x": 1.0}, ["a", "b"], now=0.0)
    second = eng.rank({"x": 2.0}, ["a", "b"], now=0.0)
    eng.reward(second.event_id, 1.0, now=1.0)
    eng.reward(first.event_id, 0.0, now=1.0)
    assert [r["event_id"] for r in eng.log()] == [second.event_id, first.event_id]
    assert eng.state()["log"] == eng.log()


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda s: s["slots"]["cta"].update(noise=None),
            r"engine\.slots\['cta'\]\.noise: expected a list of 3 floats, got None",
        ),
        (
            lambda s: s["slots"]["cta"]["models"].pop("b"),
            r"engine\.slots\['cta'\]\.models: expected a key 'b', got keys \['A_inv', 'G', 'P'",
        ),
        (
            lambda s: s["slots"]["cta"]["models"]["scalars"][0].append(1.0),
            r"engine\.slots\['cta'\]\.models\.scalars: expected a list of 2 x 9 floats",
        ),
        (  # a saved symmetric matrix is read whole; a broken row is still named
            lambda s: s["slots"]["cta"]["models"]["A_inv"][0][3].__setitem__(2, float("nan")),
            r"engine\.slots\['cta'\]\.models\.A_inv\[0\]\[3\]: expected a list of 5 floats",
        ),
        (
            lambda s: s["slots"]["cta"]["models"]["G"][1][7].append(0.0),
            r"engine\.slots\['cta'\]\.models\.G\[1\]\[7\]: expected a list of 1 floats, "
            r"got a list of 2 items",
        ),
        (
            lambda s: s["slots"]["cta"]["models"]["A_inv"][1].pop(),
            r"engine\.slots\['cta'\]\.models\.A_inv\[1\]: expected a list of 8 items",
        ),
        (
            lambda s: s["slots"]["hero"]["priors"]["site"]["actions"]["a"].pop(),
            r"engine\.slots\['hero'\]\.priors\['site'\]\.actions\['a'\]: "
            r"expected a list of 4 items, got a list of 3 items",
        ),
        (
            lambda s: s["slots"]["cta"]["priors"].update(city={}),
            r"engine\.slots\['cta'\]\.priors: expected prior levels in \['site', 'segment'\], "
            r"got 'city'",
        ),
        (
            lambda s: s["slots"]["cta"]["drift"].update(direction="sideways"),
            r"engine\.slots\['cta'\]\.drift\.direction: expected one of \['both', 'up', 'down'\], "
            r"got the string 'sideways'",
        ),
        (
            lambda s: s["pending"][0][1].update(x=[0.0]),
            r"engine\.pending\[0\]\[1\]\.x: expected a list of 8 floats, got a list of 1 items",
        ),
        (
            lambda s: s["log"][0].update(reward="1"),
            r"engine\.log\[0\]\.reward: expected a finite number, got the string '1'",
        ),
        (
            lambda s: s["guard"]["shown"].update(cta=["a"]),
            r"engine\.guard\.shown\['cta'\]: expected a list of 2 items, got a list of 1 items",
        ),
        (
            lambda s: s["scale"].update(n=[1.0, float("nan")]),
            r"engine\.scale\['n'\]: expected a list of 2 floats",
        ),
        (
            lambda s: s["rng"].update(state="xyz"),
            r"engine\.rng\.state: expected a hexadecimal string, got the string 'xyz'",
        ),
        (
            lambda s: s["params"].update(dim=1),
            r"engine\.params: dim must be an int in \[2, 4096\], got 1",
        ),
        (lambda s: s.update(counter=-1), r"engine\.counter: expected an integer >= 0, got -1"),
        (
            lambda s: s.update(version=99),
            r"engine\.version: expected a state version from 1 to 2, got 99",
        ),
        (
            lambda s: s.update(format="other"),
            r"engine\.format: expected 'microadjust.core.engine', got the string 'other'",
        ),
    ],
)
def test_a_bad_state_names_the_key_path_that_is_wrong(break_it, message):
    state = busy_engine().state()
    Engine.from_state(state)  # the intact state loads
    break_it(state)
    with pytest.raises(InvalidState, match=f"^{message}"):
        Engine.from_state(state)


def test_a_state_that_is_not_a_mapping_says_so():
    with pytest.raises(
        InvalidState, match=r"^engine: expected a mapping .*, got a list of 0 items"
    ):
        Engine.from_state([])
