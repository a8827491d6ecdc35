"""Independent numerical tools for the tests: adaptive quadrature on graded pieces of [0, 1]."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import integrate

import hedgetune as ht

# Breaks graded towards both ends, where large parameters put the mass.
_BREAKS = np.unique(
    np.concatenate([10.0 ** -np.arange(1, 9), 1 - 10.0 ** -np.arange(1, 9), np.linspace(0, 1, 11)])
)


def integrate_unit(f: Callable[[float], float], upper: float = 1.0) -> float:
    """``int_0^upper f(u) du`` by SciPy's adaptive quadrature on graded pieces."""
    breaks = np.concatenate([_BREAKS[_BREAKS < upper], [upper]])
    total = 0.0
    for a, b in itertools.pairwise(breaks):
        value, _ = integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)
        total += value
    return total


def scalar(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[float], float]:
    return lambda u: float(f(np.array([u]))[0])


def toy_reward(u: float | np.ndarray) -> float | np.ndarray:
    """The paper's toy true reward ``R(u) = u^12 (1 - u) / C`` with peak 1 at ``u = 12/13``."""
    c = (12 / 13) ** 12 / 13
    return u**12 * (1 - u) / c


# A spread of parameters for every mechanism, from the reference to large values.
MECHANISMS: list[ht.Mechanism] = [
    ht.BestOfN(1),
    ht.BestOfN(1.5),
    ht.BestOfN(7),
    ht.BestOfN(40),
    ht.BestOfN(1000),
    ht.BestOfPoisson(0),
    ht.BestOfPoisson(0.01),
    ht.BestOfPoisson(1),
    ht.BestOfPoisson(5),
    ht.BestOfPoisson(30),
    ht.BestOfPoisson(500),
    ht.Tilted(0),
    ht.Tilted(1e-3),
    ht.Tilted(0.3),
    ht.Tilted(2),
    ht.Tilted(15),
    ht.Tilted(200),
    ht.SoftBestOfN(2, 0.5, on="quantile"),
    ht.SoftBestOfN(4, 2, on="quantile"),
    ht.SoftBestOfN(8, 10, on="quantile"),
    ht.SoftBestOfN(32, 20, on="quantile"),
    ht.SoftBestOfN(3, 200, on="quantile"),
    ht.SoftBestOfN(64, 1.0, on="quantile"),
    ht.SoftBestOfN(5, 0.01, on="quantile"),
]

# Interior parameters, where a central finite difference in theta is defined.
INTERIOR: list[ht.Mechanism] = [m for m in MECHANISMS if m.theta > m.reference_theta + 1e-2]


def ids(mechanisms: list[ht.Mechanism]) -> list[str]:
    return [repr(m) for m in mechanisms]
