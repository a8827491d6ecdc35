"""The registry contract: every registered mechanism, and one added as a single file plus one
registration line (``docs/examples/best_of_geometric.py``), passes the public conformance suite
(:func:`hedgetune.testing.check_mechanism`: its maths against simulation, its curves against
simulated deployments, curve -> tune -> diagnose -> evaluate -> the command line -> the report ->
the gateway), and the added one's mathematics is verified by enumeration too."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

import hedgetune as ht
from hedgetune.mechanisms import Mechanism, names, register, unregister
from hedgetune.testing import check_mechanism

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "best_of_geometric.py"


def _load_example() -> type[Mechanism]:
    spec = importlib.util.spec_from_file_location("best_of_geometric", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.BestOfGeometric  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def geometric() -> Iterator[type[Mechanism]]:
    cls = _load_example()
    register(cls)  # the one registration line
    yield cls
    unregister(cls.name)


@pytest.mark.parametrize("name", names())
def test_every_registered_mechanism_passes_the_conformance_suite(name: str) -> None:
    """hedgetune.testing.check_mechanism over the registry itself: no hand-kept list."""
    done = check_mechanism(name)
    assert {"curve", "tune", "diagnose", "evaluate", "command line", "report"} <= set(done)


def test_the_one_file_example_passes_the_conformance_suite() -> None:
    """A plug-in not yet registered is registered for the checks (and only for them)."""
    cls = _load_example()
    assert check_mechanism(cls) == ["density", "deployment", "curve", "tune", "diagnose", "evaluate",
                                    "command line", "report", "gateway"]
    assert cls.name not in names()


def test_the_conformance_suite_catches_a_wrong_mechanism() -> None:
    """A selection rule that differs from the curves' maths, and a CDF that differs from the
    sampler, are both caught."""
    import dataclasses

    from hedgetune.testing import _check_density, _check_deployment, _Data

    @dataclasses.dataclass(frozen=True, repr=False)
    class SecondBest(ht.BestOfN):  # type: ignore[misc]
        name = "second_best"

        def _select(self, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return np.argsort(scores, axis=1)[:, -2] if scores.shape[1] > 1 else np.zeros(scores.shape[0], dtype=np.intp)

    with pytest.raises(AssertionError, match="simulated deployments"):
        _check_deployment(SecondBest(4), _Data.make(0), 0)

    @dataclasses.dataclass(frozen=True, repr=False)
    class WrongSampler(ht.BestOfN):  # type: ignore[misc]
        name = "wrong_sampler"

        def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
            return rng.random(size)

    with pytest.raises(AssertionError, match="CDF against a simulation"):
        _check_density(WrongSampler(4), 0)


def test_the_example_mechanism_is_exact(geometric: type[Mechanism]) -> None:
    """Best-of-Geometric's CDF against simulation of its sampler, its pdf and score against
    differences of the CDF, and its deployment weights against enumeration of fresh draws."""
    mech = geometric(2.5)  # type: ignore[call-arg]
    u = np.linspace(0.05, 0.95, 19)
    draws = mech.sample_quantiles(400_000, rng=1)
    empirical = (draws[:, None] <= u[None, :]).mean(axis=0)
    se = np.sqrt(mech.cdf(u) * (1 - mech.cdf(u)) / draws.size)
    assert np.all(np.abs(empirical - mech.cdf(u)) < 5 * se)
    h = 1e-6
    np.testing.assert_allclose(mech.pdf(u), (mech.cdf(u + h) - mech.cdf(u - h)) / (2 * h), rtol=1e-6)
    numeric = (geometric(2.5 + h).cdf(u) - geometric(2.5 - h).cdf(u)) / (2 * h)  # type: ignore[call-arg]
    np.testing.assert_allclose(mech.cdf_dtheta(u), numeric, rtol=1e-6, atol=1e-10)
    assert mech.mean() == pytest.approx(float(draws.mean()), abs=5 * draws.std() / np.sqrt(draws.size))
    # Deployment: N fresh draws from a pool of m, N = 1 + Geometric; N >= m counts as the pool.
    m = 5
    weights = mech.deployment_probabilities(m)[0]
    p = 2.5 / 3.5
    expected = np.zeros(m)
    for count in range(1, m + 1):
        prob = (1 - p) * p ** (count - 1) if count < m else p ** (m - 1)
        for subset in combinations(range(m), count):
            expected[max(subset)] += prob / len(list(combinations(range(m), count)))
    np.testing.assert_allclose(weights, expected, atol=1e-14)
    slope = mech.deployment_probabilities(m, derivative=True)[0]
    quotient = (
        geometric(2.5 + h).deployment_probabilities(m)[0] - geometric(2.5 - h).deployment_probabilities(m)[0]  # type: ignore[call-arg]
    ) / (2 * h)
    np.testing.assert_allclose(slope, quotient, atol=1e-8)


def test_registration_is_checked() -> None:
    with pytest.raises(TypeError, match="Mechanism subclasses"):
        register(int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="taken by"):
        clash = type("Clash", (ht.BestOfN,), {})
        register(clash)
    with pytest.raises(ValueError, match="unknown mechanism 'nope'"):
        ht.curve(ht.synthetic.make_table("toy", 10, 4, seed=0), "nope")
