"""numpy.random, as the worker ships it: numpy 2.0.2's ``numpy/random/__init__.py`` with every
bit generator but PCG64, and the legacy ``RandomState`` API, loaded on first use.

numpy's own module imports all of them at once: nine WebAssembly shared libraries, about 120 ms
of a warm boot in Pyodide. The engine draws from ``Generator(PCG64)``, which needs five.
build/precompile.py puts this file in place of the official one (after checking that one's
sha256), so ``numpy.random`` still offers every name it did (scikit-learn uses ``RandomState``
and ``numpy.random.mtrand``), each module imported when a name from it is first asked for.
"""

# ruff: noqa: F822 (names in __all__ that __getattr__ below provides on first use)
import importlib

from ._generator import Generator, default_rng
from ._pcg64 import PCG64, PCG64DXSM
from .bit_generator import BitGenerator, SeedSequence

# The legacy functions (numpy.random.rand, seed, ...) and classes, from numpy 2.0.2's list.
_LEGACY = [
    "beta",
    "binomial",
    "bytes",
    "chisquare",
    "choice",
    "dirichlet",
    "exponential",
    "f",
    "gamma",
    "geometric",
    "get_state",
    "gumbel",
    "hypergeometric",
    "laplace",
    "logistic",
    "lognormal",
    "logseries",
    "multinomial",
    "multivariate_normal",
    "negative_binomial",
    "noncentral_chisquare",
    "noncentral_f",
    "normal",
    "pareto",
    "permutation",
    "poisson",
    "power",
    "rand",
    "randint",
    "randn",
    "random",
    "random_integers",
    "random_sample",
    "ranf",
    "rayleigh",
    "sample",
    "seed",
    "set_state",
    "shuffle",
    "standard_cauchy",
    "standard_exponential",
    "standard_gamma",
    "standard_normal",
    "standard_t",
    "triangular",
    "uniform",
    "vonmises",
    "wald",
    "weibull",
    "zipf",
]
__all__ = [
    *_LEGACY,
    "Generator",
    "RandomState",
    "SeedSequence",
    "MT19937",
    "Philox",
    "PCG64",
    "PCG64DXSM",
    "SFC64",
    "default_rng",
    "BitGenerator",
]
_FROM_MODULE = {
    **dict.fromkeys([*_LEGACY, "RandomState"], "mtrand"),
    "MT19937": "_mt19937",
    "Philox": "_philox",
    "SFC64": "_sfc64",
}
_SUBMODULES = {"_pickle", "_common", "_bounded_integers", "_mt19937", "_philox", "_sfc64", "mtrand"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FROM_MODULE:
        return getattr(importlib.import_module(f"{__name__}.{_FROM_MODULE[name]}"), name)
    if name == "test":
        from numpy._pytesttester import PytestTester

        return PytestTester(__name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__, *_SUBMODULES, "test"})


def __RandomState_ctor():  # noqa: N802 (numpy's name: pickles of RandomState refer to it)
    """Return a RandomState instance, for unpickling (see numpy's own module)."""
    return __getattr__("RandomState")(seed=0)
