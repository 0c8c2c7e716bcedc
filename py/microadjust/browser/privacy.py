"""Local differential privacy for sync uploads: clip every decision, add Gaussian noise.

This runs on the visitor's device (it ships in the browser wheel; numpy only). The sync server
only ever receives the noisy sums this module produces, never a decision, a context or an event.

What is released, per slot: for each action offered, ``n`` (decisions with a known outcome)
and ``reward_sum``; the holdout's ``n`` and ``reward``; and the off-policy sums ``w`` and
``wr`` (importance weights of the current policy). From these the server builds a
context-free site prior (see ``microadjust.server.aggregate``). Gram matrices are *not*
released: under local noise a 64 x 64 matrix needs thousands of visitors per slot before its
signal beats the noise (the noise's spectral norm grows like ``2 sigma sqrt(uploads * dim)``),
while these few sums are useful after a few dozen.

Mechanism (the Gaussian mechanism, Dwork & Roth 2014, Theorem A.1):

1. **Clip each decision's contribution**: reward ``r <- clip(r, 0, 1)``, importance weight
   ``w <- min(w, IPS_CLIP) / IPS_CLIP`` (``w`` = current policy probability / logged
   propensity). One decision adds ``(1, r)`` to its action's ``(n, reward_sum)``, ``(1, r)``
   to the holdout's ``(n, reward)`` if it was a holdout decision, and ``(w, w r)`` to the
   slot's ``(w, wr)``. So adding or removing one decision moves the vector of all released
   numbers by at most ``SENSITIVITY = sqrt(6)`` in L2 norm.
2. **Add noise to every released number**, also to the zeros of actions offered without a
   decision in this upload: independent ``N(0, sigma^2)`` with
   ``sigma = SENSITIVITY * sqrt(2 ln(1.25 / delta)) / epsilon``. Defaults: ``epsilon = 1``,
   ``delta = 1e-5``, so ``sigma ≈ 11.9``. Rounding afterwards is post-processing (free).

Accounting. Each upload is (epsilon, delta)-differentially private with respect to any single
decision in it (event-level local DP). A decision goes into at most one upload (the sync
client keeps a watermark, and a retry resends the *same* noisy batch, never a fresh draw), so
by parallel composition every decision is covered by (epsilon, delta) once, for the lifetime
of the device. For all of a visitor's ``k`` decisions together (user-level) group privacy
gives ``(k epsilon, k e^{(k-1) epsilon} delta)``; the minimum number of events per upload
(20 by default) means one upload is never about a single click, and the noise (sigma ≈ 12
per number) dominates any one visitor's sums, which only become useful added over many
visitors on the server. What is not hidden: which slots and variants the visitor's pages
offered (the site's own structure), that an upload happened, and its declared event count.

>>> acc = Accumulator()
>>> for r in (1.0, 0.0, 1.0):
...     acc.add("s", "a", r, weight=1.0)
>>> acc.exact()["s"]["actions"]["a"]
{'n': 3.0, 'reward_sum': 2.0}
>>> round(gaussian_sigma(1.0, 1e-5), 1)
11.9
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_EPSILON",
    "DEFAULT_DELTA",
    "IPS_CLIP",
    "SENSITIVITY",
    "Accumulator",
    "gaussian_sigma",
]

DEFAULT_EPSILON = 1.0
DEFAULT_DELTA = 1e-5
IPS_CLIP = 10.0  # importance weights are clipped to this, then divided by it
SENSITIVITY = math.sqrt(6.0)  # L2 bound on one decision's contribution (see module docs)
MECHANISM = "gaussian"


def gaussian_sigma(
    epsilon: float, delta: float = DEFAULT_DELTA, sensitivity: float = SENSITIVITY
) -> float:
    """Noise standard deviation of the classic Gaussian mechanism (needs 0 < epsilon <= 1)."""
    if not (0 < epsilon <= 1):
        raise ValueError(f"epsilon must be in (0, 1] for the Gaussian mechanism, got {epsilon!r}")
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


class Accumulator:
    """Clipped per-decision sums for the slots of one upload, and their noisy release."""

    def __init__(self) -> None:
        self.events = 0
        # slot -> {"actions": {action: [n, reward_sum]}, "holdout": [n, r], "ope": [w, wr]}
        self._slots: dict[str, dict[str, Any]] = {}

    def declare(self, slot: str, action: str) -> list[float]:
        """Make sure ``action`` of ``slot`` is released (with noise) even without decisions."""
        entry = self._slots.setdefault(
            slot, {"actions": {}, "holdout": [0.0, 0.0], "ope": [0.0, 0.0]}
        )
        return entry["actions"].setdefault(action, [0.0, 0.0])

    def add(
        self, slot: str, action: str, reward: float, *, weight: float, holdout: bool = False
    ) -> None:
        """Add one decision, clipped (see the module docs)."""
        r = min(max(float(reward), 0.0), 1.0)
        w = min(max(float(weight), 0.0), IPS_CLIP) / IPS_CLIP
        sums = self.declare(slot, action)
        sums[0] += 1.0
        sums[1] += r
        entry = self._slots[slot]
        if holdout:
            entry["holdout"][0] += 1.0
            entry["holdout"][1] += r
        entry["ope"][0] += w
        entry["ope"][1] += w * r
        self.events += 1

    def exact(self) -> dict[str, Any]:
        """The clipped sums without noise (for tests; never uploaded)."""
        return self._release(lambda values: [float(v) for v in values])

    def release(
        self,
        rng: np.random.Generator,
        epsilon: float = DEFAULT_EPSILON,
        delta: float = DEFAULT_DELTA,
        digits: int = 2,
    ) -> dict[str, Any]:
        """Every slot's sums with Gaussian noise: the ``slots`` and ``privacy`` of an upload."""
        sigma = gaussian_sigma(epsilon, delta)

        def noisy(values: list[float]) -> list[float]:
            drawn = np.asarray(values) + rng.normal(0.0, sigma, len(values))
            return [float(v) for v in np.round(drawn, digits)]

        privacy = {
            "mechanism": MECHANISM,
            "epsilon": float(epsilon),
            "delta": float(delta),
            "sigma": sigma,
            "ips_clip": IPS_CLIP,
        }
        return {"slots": self._release(noisy), "privacy": privacy}

    def _release(self, transform: Any) -> dict[str, Any]:
        out = {}
        for slot, entry in self._slots.items():
            actions = {}
            for action, sums in entry["actions"].items():
                n, reward_sum = transform(sums)
                actions[action] = {"n": n, "reward_sum": reward_sum}
            h_n, h_r = transform(entry["holdout"])
            w, wr = transform(entry["ope"])
            out[slot] = {
                "actions": actions,
                "holdout": {"n": h_n, "reward": h_r},
                "ope": {"w": w, "wr": wr},
            }
        return out
