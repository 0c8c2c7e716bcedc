"""Featurization: validation, stable bounded hashing, online scaling, interactions."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest

from microadjust import InvalidActions, InvalidContext
from microadjust.core.features import Featurizer


def vec(f: Featurizer, ctx, actions=None, n=1):
    p = f.parse(ctx, "context")
    f.observe(p)
    feats = None
    if actions is not None:
        names, feats = f.parse_actions(actions, 64)
        for a in feats or []:
            f.observe(a)
        n = len(names)
    return f.transform(p, feats, n)


def test_bounded_dimension_and_bias():
    f = Featurizer(dim=16)
    X = vec(f, {f"k{i}": f"value-{i}" for i in range(200)})
    assert X.shape == (1, 16) and X[0, 0] == 1.0


def test_hashing_is_stable_across_processes():
    code = (
        "from microadjust.core.features import Featurizer; f = Featurizer(dim=32); "
        "p = f.parse({'device': 'mobile', 'x': 2.0}, 'c'); print(p.index, p.values)"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2)
    }
    assert len(outs) == 1


def test_categorical_bool_numeric():
    f = Featurizer(dim=64)
    a = vec(f, {"device": "mobile"})
    b = vec(f, {"device": "desktop"})
    assert not np.array_equal(a, b)
    t = vec(f, {"flag": True})
    fl = vec(f, {"flag": False})
    assert not np.array_equal(t, fl)
    # numeric values are scaled online (RMS) and clipped
    f2 = Featurizer(dim=64)
    for v in [1.0, -1.0, 1.0, -1.0]:
        x = vec(f2, {"x": v})
    assert np.abs(x[0, 1:]).max() == pytest.approx(1.0)
    for _ in range(100):
        vec(f2, {"x": 1.0})
    f2.scale["x"] = [100.0, 100.0]  # RMS 1: a huge value is clipped at 3
    big = f2.transform(f2.parse({"x": 1e6}, "context"), None, 1)
    assert np.abs(big[0, 1:]).max() == pytest.approx(3.0)


def test_maxabs_scaling_keeps_values_in_unit_interval():
    f = Featurizer(dim=64, scaling="maxabs")
    for v in [5.0, -20.0, 3.0]:
        x = vec(f, {"x": v})
    assert np.abs(x[0, 1:]).max() == pytest.approx(3.0 / 20.0)


def test_action_features_and_interactions():
    f = Featurizer(dim=256, interactions=True)
    X = vec(f, {"device": "mobile"}, {"a": {"price": 1.0}, "b": {"price": 1.0, "tier": "x"}})
    assert X.shape == (2, 256) and not np.array_equal(X[0], X[1])
    g = Featurizer(dim=256, interactions=False)
    Y = vec(g, {"device": "mobile"}, {"a": {"price": 1.0}, "b": {"price": 1.0, "tier": "x"}})
    # interactions add exactly one extra (context x action) term per pair
    assert np.count_nonzero(X[0]) > np.count_nonzero(Y[0])
    # without action features every action shares the context vector
    Z = vec(f, {"device": "mobile"}, ["a", "b", "c"])
    assert Z.shape == (3, 256) and (Z[0] == Z[2]).all()


@pytest.mark.parametrize(
    "ctx",
    [{"x": float("nan")}, {"x": None}, {"": 1}, {1: 1}, {"x": object()}, [("x", 1)]],
)
def test_invalid_context(ctx):
    with pytest.raises(InvalidContext):
        Featurizer().parse(ctx, "context")


def test_invalid_actions_message_names_the_problem():
    f = Featurizer()
    with pytest.raises(InvalidActions, match="duplicate action id 'a'"):
        f.parse_actions(["a", "b", "a"], 10)
    with pytest.raises(InvalidActions, match="empty"):
        f.parse_actions([], 10)
    with pytest.raises(InvalidActions, match="max_actions=2"):
        f.parse_actions(["a", "b", "c"], 2)


def test_numpy_scalars():
    f = Featurizer()
    p = f.parse({"a": np.float32(1.5), "b": np.int8(2), "c": np.bool_(False)}, "context")
    assert len(p.index) == 3


@pytest.mark.parametrize(
    "module",
    [
        *(
            f"core.{m}"
            for m in (
                "features",
                "drift",
                "policies",
                "models",
                "state",
                "sampling",
                "reasons",
                "records",
                "slots",
                "params",
                "priors",
                "evaluation",
                "engine",
            )
        ),
        "browser.triggers",
        "browser.segments",
    ],
)
def test_docstring_examples(module):
    mod = importlib.import_module(f"microadjust.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
