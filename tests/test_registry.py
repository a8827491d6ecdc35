"""The registry contract: every registered mechanism, and one added as a single file plus one
registration line (``docs/examples/best_of_geometric.py``), runs through curve -> tune -> diagnose
-> select -> the command line -> the report, and the added one's mathematics is verified."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.mechanisms import Mechanism, names, register, unregister

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


def _options(name: str) -> dict[str, object]:
    return {"n": 2} if name == "sbon" else {}


@pytest.mark.parametrize("name", ["bon", "sbon", "bop", "tilted", "bog"])
def test_every_mechanism_runs_through_the_whole_library(
    name: str, geometric: type[Mechanism], tmp_path: Path
) -> None:
    assert name in names()
    table = ht.synthetic.make_table("toy", 40, 6, seed=3)
    options = _options(name)
    for estimator in ("unbiased", "plugin"):
        c = ht.curve(table, name, bootstrap=30, estimator=estimator, **options)  # type: ignore[arg-type]
        assert np.all(np.isfinite(c.true_reward)) and c.template.name == name
        json.dumps(c.to_dict(), allow_nan=False)
    result = ht.tune(table, name, bootstrap=50, **options)  # type: ignore[arg-type]
    assert np.isfinite(result.true_reward) and result.template.name == name
    json.dumps(result.to_dict(), allow_nan=False)
    diagnosis = ht.diagnose(table, name, bootstrap=30, **options)  # type: ignore[arg-type]
    assert diagnosis.sentence() and result.template.display_name in diagnosis.sentence()
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    chosen = result.mechanism_at().select(np.random.default_rng(0).random((5, 6)), rng=0)
    assert chosen.shape == (5,) and np.all((chosen >= 0) & (chosen < 6))
    oos = ht.evaluate(table, name, repeats=2, bootstrap=20, **options)  # type: ignore[arg-type]
    json.dumps(oos.to_dict(), allow_nan=False)

    path = tmp_path / "t.parquet"
    ht.write_table(table, path)
    extra = ["--n", "2"] if name == "sbon" else []
    runner = CliRunner()
    for args in (
        ["curve", str(path), "-m", name, *extra, "--bootstrap", "20", "--json"],
        ["tune", str(path), "-m", name, *extra, "--bootstrap", "20", "--json"],
        ["evaluate", str(path), "-m", name, *extra, "--bootstrap", "20", "--repeats", "2", "--json"],
    ):
        out = runner.invoke(main, args)
        assert out.exit_code == 0, (args, out.output)
        json.loads(out.stdout)
    out = runner.invoke(main, ["select", "-m", name, *extra, "--theta", "2"], input="0.1 0.5 0.3\n0.9 0.2\n")
    assert out.exit_code == 0, out.output

    from hedgetune.report.analysis import analyse, write_report

    analysis = analyse(table, "contract", mechanisms={name: (name, options)}, repeats=2, bootstrap=20)
    page = write_report([analysis], tmp_path / "report")
    assert page.is_file() and result.template.display_name in page.read_text()


def test_every_registered_mechanism_has_a_contract_test() -> None:
    """A mechanism registered without passing through a contract test is a defect: the rank-based
    ones run above, the set rules (which need covariates) in tests/test_hedges.py."""
    from test_hedges import HEDGES

    covered = {"bon", "sbon", "bop", "tilted", "bog", *HEDGES}  # bog: the one-file example, while registered
    assert set(names()) <= covered, sorted(set(names()) - covered)


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
