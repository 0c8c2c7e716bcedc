"""Behavioural micro-segments: online MiniBatchKMeans, DBSCAN for offline analysis.

scikit-learn is imported only inside the functions that fit (``Segmenter.partial_fit`` and
:func:`dbscan_segments`), never when ``microadjust`` is imported: in the browser it loads
lazily, and assigning a visitor to a segment only needs numpy (nearest centre).

Signals are standardized with running means and variances; the segment id is meant to be
used as a context feature (``context["segment"] = segmenter.segment(signals)``) and to pick a
segment-level prior (``Engine.set_prior(slot, stats, level="segment")``).

>>> seg = Segmenter(["dwell_s", "scroll_depth"], n_segments=2, seed=0)
>>> rows = [{"dwell_s": 5.0 + i % 3, "scroll_depth": 0.1} for i in range(20)]
>>> rows += [{"dwell_s": 90.0 + i % 3, "scroll_depth": 0.9} for i in range(20)]
>>> _ = seg.partial_fit(rows)
>>> seg.segment({"dwell_s": 6.0, "scroll_depth": 0.2}) != seg.segment(
...     {"dwell_s": 91.0, "scroll_depth": 0.8})
True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import InvalidContext, InvalidParameter, InvalidState

__all__ = ["SEGMENT_SIGNALS", "Segmenter", "Segments", "dbscan_segments"]

SEGMENT_SIGNALS = ("dwell_s", "scroll_depth", "clicks", "idle_s", "visits")


def _rows_to_array(rows: Iterable[Mapping[str, Any]], signals: Sequence[str]) -> np.ndarray:
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidContext(f"row {i} must be a mapping of signals")
        values = []
        for name in signals:
            if name not in row:
                raise InvalidContext(f"row {i} lacks signal {name!r}")
            v = row[name]
            if isinstance(v, bool):
                v = float(v)
            if not isinstance(v, int | float) and not hasattr(v, "__float__"):
                raise InvalidContext(f"signal {name!r} = {v!r} is not a number")
            v = float(v)
            if not math.isfinite(v):
                raise InvalidContext(f"signal {name!r} = {v!r} is not finite")
            values.append(v)
        out.append(values)
    return np.array(out, dtype=np.float64).reshape(len(out), len(signals))


class Segmenter:
    """Online k-means over behavioural signals (``n_segments`` clusters).

    ``partial_fit(rows)`` updates the clusters (rows are buffered until there are at least
    ``n_segments`` of them); ``assign(signals)`` returns the index of the nearest centre
    (``-1`` before the first fit) and ``segment(signals)`` a string id such as ``"seg3"``.
    ``to_state``/``from_state`` serialize centres and scaling (JSON); after a restore the
    k-means counts restart from the restored centres.
    """

    def __init__(
        self,
        signals: Sequence[str],
        n_segments: int = 8,
        seed: int = 0,
        batch_size: int = 256,
    ):
        if not signals or any(not isinstance(s, str) or not s for s in signals):
            raise InvalidParameter("signals must be a non-empty sequence of signal names")
        if len(set(signals)) != len(signals):
            raise InvalidParameter("signal names must be unique")
        if type(n_segments) is not int or not 1 <= n_segments <= 1000:
            raise InvalidParameter(f"n_segments must be an int in [1, 1000], got {n_segments!r}")
        self.signals = list(signals)
        self.n_segments = n_segments
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.n = 0.0
        self.mean = np.zeros(len(self.signals))
        self.m2 = np.zeros(len(self.signals))
        self.centers: np.ndarray | None = None
        self._buffer: list[list[float]] = []
        self._model: Any = None

    def _scale(self, X: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.n, 1.0))
        std[std == 0] = 1.0
        return (X - self.mean) / std

    def partial_fit(self, rows: Iterable[Mapping[str, Any]]) -> Segmenter:
        """Update scaling and clusters with a batch of signal mappings."""
        X = _rows_to_array(rows, self.signals)
        for x in X:  # Welford update of the running scaling
            self.n += 1.0
            d = x - self.mean
            self.mean += d / self.n
            self.m2 += d * (x - self.mean)
        self._buffer.extend(X.tolist())
        if len(self._buffer) < self.n_segments:
            return self
        from sklearn.cluster import MiniBatchKMeans  # lazy: heavy in the browser

        if self._model is None:
            init: Any = "k-means++" if self.centers is None else self.centers
            self._model = MiniBatchKMeans(
                n_clusters=self.n_segments,
                init=init,
                n_init=1,
                batch_size=self.batch_size,
                random_state=self.seed,
            )
        self._model.partial_fit(self._scale(np.array(self._buffer)))
        self._buffer = []
        self.centers = np.array(self._model.cluster_centers_, dtype=np.float64)
        return self

    def assign(self, signals: Mapping[str, Any]) -> int:
        """Index of the nearest segment centre (numpy only), or -1 before any fit."""
        x = _rows_to_array([signals], self.signals)
        if self.centers is None:
            return -1
        d = ((self.centers - self._scale(x)) ** 2).sum(axis=1)
        return int(d.argmin())

    def segment(self, signals: Mapping[str, Any]) -> str:
        """String segment id for a context feature, e.g. ``"seg2"`` (``"seg?"`` if unfitted)."""
        k = self.assign(signals)
        return "seg?" if k < 0 else f"seg{k}"

    def to_state(self) -> dict[str, Any]:
        return {
            "signals": list(self.signals),
            "n_segments": self.n_segments,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "n": self.n,
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "centers": None if self.centers is None else self.centers.tolist(),
            "buffer": [list(r) for r in self._buffer],
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> Segmenter:
        try:
            seg = cls(d["signals"], int(d["n_segments"]), int(d["seed"]), int(d["batch_size"]))
            k = len(seg.signals)
            seg.n = float(d["n"])
            seg.mean = np.array(d["mean"], dtype=np.float64).reshape(k)
            seg.m2 = np.array(d["m2"], dtype=np.float64).reshape(k)
            if d["centers"] is not None:
                seg.centers = np.array(d["centers"], dtype=np.float64).reshape(seg.n_segments, k)
            seg._buffer = [[float(v) for v in r] for r in d["buffer"]]
        except (KeyError, TypeError, ValueError, InvalidParameter) as exc:
            raise InvalidState(f"invalid segmenter state: {exc}") from exc
        return seg


class Segments:
    """The worker's visitor segment: a context feature of each decision, from its signals.

    scikit-learn (:attr:`packages`) loads in the worker after the first decisions; until it is
    importable, each decision's signals wait in ``rows`` and the segment comes from the saved
    centres (``"seg?"`` before any fit).
    """

    packages = ("scikit-learn",)

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.rows: list[dict[str, float]] = []  # signals waiting for scikit-learn
        self.can_fit = False

    @classmethod
    def from_state(cls, state: Any, *, option: Any, seed: int) -> Segments:
        """The saved segmenter, or a new one with ``option["n"]`` segments (default 4) when
        there is none or it is unusable."""
        if state:
            with contextlib.suppress(InvalidState):
                return cls(Segmenter.from_state(state))
        n = option.get("n", 4) if isinstance(option, Mapping) else 4
        return cls(Segmenter(SEGMENT_SIGNALS, n_segments=n, seed=seed))

    def to_state(self) -> dict[str, Any]:
        return self.segmenter.to_state()

    def packages_loaded(self, packages: list[str]) -> None:
        self.can_fit = "scikit-learn" in packages

    def segment(self, context: Mapping[str, Any]) -> str:
        """The visitor's segment now; the segments learn from each decision's signals."""
        row = {name: float(context[name]) for name in SEGMENT_SIGNALS}
        self.rows.append(row)
        if self.can_fit:
            self.segmenter.partial_fit(self.rows)
            self.rows = []
        return self.segmenter.segment(row)

    def forget(self) -> None:
        """Start the segments afresh (the visitor asked to forget everything)."""
        self.segmenter = Segmenter(SEGMENT_SIGNALS, self.segmenter.n_segments)
        self.rows = []


def dbscan_segments(
    rows: Iterable[Mapping[str, Any]],
    signals: Sequence[str],
    eps: float = 0.5,
    min_samples: int = 5,
) -> np.ndarray:
    """Offline DBSCAN over standardized signals; returns one label per row (-1 = noise)."""
    from sklearn.cluster import DBSCAN  # lazy

    X = _rows_to_array(rows, signals)
    if X.shape[0] == 0:
        return np.zeros(0, dtype=int)
    std = X.std(axis=0)
    std[std == 0] = 1.0
    Z = (X - X.mean(axis=0)) / std
    return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(Z)
