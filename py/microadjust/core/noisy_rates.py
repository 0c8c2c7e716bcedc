"""The variance of a click rate read from noisy counts: how much a published number is worth.

The sync server publishes exposures and rewards with Gaussian noise; both the browser (how
strongly a published rate counts as a prior) and the server (whether rates changed) weigh a
rate ``reward / shown`` by this variance, so it lives in one place.

>>> round(rate_variance(0.05, 1000.0, 0.0), 8)  # no noise: the binomial variance
4.75e-05
>>> round(rate_variance(0.05, 1000.0, 100.0), 8)  # noise sd 10 on both counts
0.00014775
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["rate_variance"]

Number = TypeVar("Number", float, np.ndarray)


def rate_variance(p: Number, n: Number, noise_var: Number) -> Number:
    """The variance of ``reward / shown`` at click rate ``p`` over ``n`` exposures, both counts
    with noise of variance ``noise_var``: ``p (1 - p) / n + noise_var (1 + p**2) / n**2`` (the
    delta method). Floats or numpy arrays alike."""
    return p * (1 - p) / n + noise_var * (1 + p * p) / (n * n)
