"""Behavioural micro-segments (scikit-learn loaded lazily)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from microadjust import Engine, InvalidContext
from microadjust.browser.segments import Segmenter, dbscan_segments

SIGNALS = ["dwell_s", "scroll_depth", "clicks"]


def visitors(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out, labels = [], []
    centers = [(10, 0.1, 0), (120, 0.9, 1), (60, 0.5, 8)]
    for _ in range(n):
        k = int(rng.integers(3))
        c = centers[k]
        out.append({"dwell_s": c[0] + rng.normal(0, 5), "scroll_depth": c[1] + rng.normal(0, 0.05),
                    "clicks": c[2] + rng.normal(0, 0.5)})  # fmt: skip
        labels.append(k)
    return out, labels


def purity(assigned, labels):
    total = 0
    for seg in set(assigned):
        members = [lab for a, lab in zip(assigned, labels, strict=True) if a == seg]
        total += max(members.count(k) for k in set(members))
    return total / len(labels)


def test_online_segments_recover_behavioural_groups():
    seg = Segmenter(SIGNALS, n_segments=3, seed=0)
    assert seg.segment(visitors(1, 0)[0][0]) == "seg?"
    rows, labels = visitors(600, 0)
    for i in range(0, 600, 50):  # online, in mini-batches
        seg.partial_fit(rows[i : i + 50])
    test_rows, test_labels = visitors(300, 1)
    assigned = [seg.assign(r) for r in test_rows]
    assert purity(assigned, test_labels) > 0.95
    clone = Segmenter.from_state(json.loads(json.dumps(seg.to_state())))
    assert [clone.assign(r) for r in test_rows] == assigned
    clone.partial_fit(rows[:50])  # keeps learning after a restore


def test_segment_id_as_context_feature():
    seg = Segmenter(SIGNALS, n_segments=3, seed=0).partial_fit(visitors(300, 0)[0])
    eng = Engine(seed=0)
    rows, labels = visitors(600, 2)
    rng = np.random.default_rng(0)
    good = {0: "a", 1: "b", 2: "c"}
    hits = []
    for t, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        dec = eng.rank({"segment": seg.segment(r)}, ["a", "b", "c"], now=float(t))
        eng.reward(dec.event_id, float(rng.random() < (0.8 if dec.action == good[lab] else 0.1)),
                   now=float(t))  # fmt: skip
        hits.append(dec.action == good[lab])
    assert np.mean(hits[-200:]) > 0.8


def test_dbscan_offline():
    rows, labels = visitors(300, 3)
    found = dbscan_segments(rows, SIGNALS, eps=0.5, min_samples=5)
    assert len(found) == 300 and len(set(found) - {-1}) == 3
    assert purity(list(found), labels) > 0.95


def test_bad_rows():
    seg = Segmenter(SIGNALS, n_segments=2)
    with pytest.raises(InvalidContext):
        seg.partial_fit([{"dwell_s": 1.0}])
    with pytest.raises(InvalidContext):
        seg.assign({"dwell_s": float("nan"), "scroll_depth": 0.0, "clicks": 0})


def test_sklearn_is_only_imported_when_fitting():
    code = (
        "import sys; from microadjust.browser.segments import Segmenter; "
        "s = Segmenter(['a'], n_segments=2); s.assign({'a': 1.0}); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
