"""Reward streams for the benchmarks: deterministic, seeded, plain iterables.

Each stream yields ``(context, actions, reward_fn)`` steps:

- ``context``: ``dict[str, float | int | str | bool]`` describing the visitor or example,
- ``actions``: ``list[str]`` of action ids,
- ``reward_fn``: a :class:`Reward`; ``reward_fn(action)`` is the reward the environment
  pays for that action (its ``expected`` mapping holds each action's mean reward, which the
  quality benchmark uses for the optimal policy and the recovery curve, never the learners).

Two kinds of streams:

- :class:`SupervisedStream`: a scikit-learn bundled classification dataset turned into a
  bandit problem as in the Contextual Bandit Bake-off (Bietti, Agarwal, Langford): one action
  per class, reward 1 for the true label, else 0. No download: only ``sklearn.datasets.load_*``.
- :class:`WebStream`: simulated visitors (device, hour, scroll depth, dwell, referrer,
  returning) choosing among call-to-action variants with click rates of a few percent, whose
  preferences shift at the halfway point.

Rewards are drawn with common random numbers: one uniform draw per step, so two learners
that choose the same action at the same step get the same reward.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

Context = dict[str, float | int | str | bool]
Step = tuple[Context, list[str], "Reward"]


@dataclass(frozen=True)
class Reward:
    """Reward function of one step: Bernoulli with the given mean per action, one shared draw."""

    expected: Mapping[str, float]
    draw: float

    def __call__(self, action: str) -> float:
        """Return 1.0 when the step's uniform draw falls under the action's mean, else 0.0."""
        if action not in self.expected:
            raise KeyError(f"unknown action {action!r}; expected one of {sorted(self.expected)}")
        return 1.0 if self.draw < self.expected[action] else 0.0

    @property
    def best(self) -> str:
        """The action with the highest mean reward (first one on ties)."""
        return max(self.expected, key=self.expected.__getitem__)


# --- supervised-to-bandit -------------------------------------------------------------------

DATASETS: dict[str, str] = {
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
}


def _load(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a bundled scikit-learn dataset as (features, labels, class names)."""
    from sklearn import datasets

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    bunch = getattr(datasets, DATASETS[name])()
    x = np.asarray(bunch.data, dtype=float)
    y = np.asarray(bunch.target, dtype=int)
    names = getattr(bunch, "target_names", None)
    classes = [str(c) for c in names] if names is not None else [str(c) for c in np.unique(y)]
    return x, y, [f"class_{c}" for c in classes]


class SupervisedStream:
    """A classification dataset as a bandit stream: actions are classes, reward 1 for the label.

    Features are z-scored with the dataset's own mean and standard deviation (constant columns
    dropped) and rounded to 4 decimals, then named ``f0``, ``f1``, ...; the rows are shuffled
    again for every pass.

    >>> s = SupervisedStream("iris", passes=1, seed=0)
    >>> len(s), len(list(s))
    (150, 150)
    """

    def __init__(self, dataset: str, passes: int = 1, seed: int = 0) -> None:
        if passes < 1:
            raise ValueError(f"passes must be >= 1, got {passes}")
        self.name = dataset
        self.passes = passes
        self.seed = seed
        x, self.labels, self.actions = _load(dataset)
        std = x.std(axis=0)
        keep = std > 0
        z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
        self.features = np.round(z, 4)
        self.feature_names = [f"f{i}" for i in range(self.features.shape[1])]

    def __len__(self) -> int:
        return self.passes * len(self.labels)

    def __iter__(self) -> Iterator[Step]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.passes):
            for i in rng.permutation(len(self.labels)):
                context: Context = dict(
                    zip(self.feature_names, map(float, self.features[i]), strict=True)
                )
                truth = self.actions[int(self.labels[i])]
                expected = {a: 1.0 if a == truth else 0.0 for a in self.actions}
                yield context, list(self.actions), Reward(expected, draw=0.5)


# --- simulated web personalization ----------------------------------------------------------

CTAS: list[str] = ["cta_discount", "cta_newsletter", "cta_demo", "cta_testimonial"]
DEVICES: list[tuple[str, float]] = [("mobile", 0.6), ("desktop", 0.32), ("tablet", 0.08)]
REFERRERS: list[tuple[str, float]] = [
    ("search", 0.4),
    ("social", 0.25),
    ("direct", 0.25),
    ("email", 0.1),
]


def _pick(rng: random.Random, options: list[tuple[str, float]]) -> str:
    """Draw one option by weight."""
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _affinity_before(c: Context) -> dict[str, float]:
    """Log-odds bonus per CTA before the shift: bargain hunters, researchers, loyal readers."""
    evening = 1.0 if 18 <= int(c["hour"]) <= 23 else 0.0
    mobile = 1.0 if c["device"] == "mobile" else 0.0
    deep = float(c["scroll_depth"])
    dwell = min(float(c["dwell_s"]), 300.0) / 300.0
    returning = 1.0 if c["returning"] else 0.0
    desktop = 1.0 if c["device"] == "desktop" else 0.0
    return {
        "cta_discount": 1.0 * mobile + 0.6 * (c["referrer"] == "social") + 0.4 * evening,
        "cta_newsletter": 1.3 * returning + 0.6 * (c["referrer"] == "email") + 0.3 * deep,
        "cta_demo": 1.1 * desktop + 0.9 * dwell + 0.5 * (c["referrer"] == "search"),
        "cta_testimonial": 0.5 * deep + 0.3 * (1.0 - returning) + 0.2,
    }


# After the shift the same visitor segments want something else (e.g. a new campaign makes
# mobile visitors ignore discounts and read testimonials).
_SHIFT: dict[str, str] = {
    "cta_discount": "cta_testimonial",
    "cta_newsletter": "cta_discount",
    "cta_demo": "cta_newsletter",
    "cta_testimonial": "cta_demo",
}


def web_click_rates(context: Context, shifted: bool) -> dict[str, float]:
    """Click probability of each CTA for this visitor, before or after the preference shift."""
    affinity = _affinity_before(context)
    if shifted:
        affinity = {_SHIFT[a]: v for a, v in affinity.items()}
    base = -4.1  # about 1.6% with no affinity; strong matches reach roughly 6-10%
    return {a: round(_sigmoid(base + 1.0 * affinity[a]), 6) for a in CTAS}


class WebStream:
    """Simulated visitors choosing among CTA variants; preferences shift at ``shift_at``.

    >>> s = WebStream(n=4, seed=1)
    >>> [sorted(c) for c, _, _ in s][0]
    ['device', 'dwell_s', 'hour', 'referrer', 'returning', 'scroll_depth']
    """

    name = "web_shift"
    actions = CTAS

    def __init__(self, n: int = 20_000, seed: int = 0, shift_at: int | None = None) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.seed = seed
        self.shift_at = n // 2 if shift_at is None else shift_at

    def __len__(self) -> int:
        return self.n

    def visitor(self, rng: random.Random) -> Context:
        """Draw one visitor's context."""
        device = _pick(rng, DEVICES)
        return {
            "device": device,
            "hour": int(rng.triangular(0, 24, 20)) % 24,
            "scroll_depth": round(rng.betavariate(2, 3), 3),
            "dwell_s": round(rng.lognormvariate(3.5, 1.0), 1),
            "referrer": _pick(rng, REFERRERS),
            "returning": rng.random() < 0.3,
        }

    def __iter__(self) -> Iterator[Step]:
        rng = random.Random(self.seed)
        for t in range(self.n):
            context = self.visitor(rng)
            rates = web_click_rates(context, shifted=t >= self.shift_at)
            yield context, list(CTAS), Reward(rates, draw=rng.random())


# --- registry -------------------------------------------------------------------------------

StreamFactory = Callable[[int], "SupervisedStream | WebStream"]


def all_streams(quick: bool = False) -> dict[str, StreamFactory]:
    """Stream factories (seed -> stream) used by the quality benchmark, smaller when ``quick``."""
    passes = {"iris": 20, "wine": 16, "breast_cancer": 5, "digits": 2}
    web_n = 20_000
    if quick:
        passes = {"iris": 6, "wine": 5, "breast_cancer": 2, "digits": 1}
        web_n = 6_000

    def supervised(name: str) -> StreamFactory:
        return lambda seed: SupervisedStream(name, passes=passes[name], seed=seed)

    factories: dict[str, StreamFactory] = {name: supervised(name) for name in passes}
    factories["web_shift"] = lambda seed: WebStream(n=web_n, seed=seed)
    return factories
