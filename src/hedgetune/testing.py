"""The conformance suite every mechanism passes: :func:`check_mechanism`.

Like scikit-learn's ``check_estimator``, it takes a registered name or a :class:`Mechanism`
subclass (a plug-in not yet registered is registered for the duration) and raises
``AssertionError`` naming the first check that fails. The checks, each against an independent
computation:

1. **The density** (mechanisms that have one in quantile space): the CDF against a simulation of
   the mechanism's own sampler (within 5 standard errors), the density against differences of the
   CDF, the derivative in the parameter against differences in the parameter, the mean quantile
   against the simulation.
2. **What a deployment gets**: the curve's unbiased estimate at a parameter against a Monte Carlo
   of the deployment itself -- draw the mechanism's number of candidates from each prompt's pool
   without replacement and let :meth:`Mechanism.select` choose -- within 5 standard errors. This
   ties the estimator the tuning maximises to the rule the gateway serves.
3. **The library**: curve (both estimators), tune, diagnose, evaluate, select, the command line
   (``curve``, ``tune``, ``evaluate``, ``select``) and the report run and give strict JSON; the
   gateway serves a policy of every mechanism :func:`~hedgetune.mechanisms.registry.servable` accepts.

``check_mechanism`` returns the names of the checks it ran (those that do not apply are skipped,
e.g. the density of a rule that sees raw scores).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import FloatArray
from .mechanisms import Mechanism, lookup, names, register, unregister
from .table import RewardTable

#: Standard errors a simulated value may differ by.
TOLERANCE_SE = 5.0


def check_mechanism(mechanism: str | type[Mechanism], *, seed: int = 0) -> list[str]:
    """Run the conformance suite on a registered name or a mechanism class; return the checks run."""
    with _registered(mechanism) as cls:
        options = {"n": 4} if "n" in inspect.signature(cls.template).parameters else {}
        template = cls.template(**options)
        options = dict(template.options)
        data = _Data.make(seed)
        theta = _moderate_theta(template, data.table)
        done = []
        if _has_density(template.with_theta(theta)):
            _check_density(template.with_theta(theta), seed)
            done.append("density")
        if template.deployable:
            _check_deployment(template.with_theta(theta), data, seed)
            done.append("deployment")
        done += _check_library(cls.name, template, options, theta, data.table)
        return done


@contextlib.contextmanager
def _registered(mechanism: str | type[Mechanism]) -> Iterator[type[Mechanism]]:
    if isinstance(mechanism, str):
        yield lookup(mechanism)
        return
    if not (isinstance(mechanism, type) and issubclass(mechanism, Mechanism)):
        raise TypeError(f"check_mechanism takes a registered name or a Mechanism subclass, got {mechanism!r}")
    added = mechanism.name not in names()
    if added:
        register(mechanism)
    try:
        yield mechanism
    finally:
        if added:
            unregister(mechanism.name)


class _Data:
    """A small table with every column a mechanism may read (a covariate log-probability, a length,
    pairwise similarities), some tied proxies, and each prompt's raw arrays kept for simulation."""

    def __init__(self, proxy: FloatArray, true: FloatArray, logprob: FloatArray, length: FloatArray, similarity: FloatArray) -> None:
        self.proxy, self.true, self.logprob, self.length, self.similarity = proxy, true, logprob, length, similarity
        prompts, m = proxy.shape
        self.table = RewardTable.from_arrays(
            {"proxy_reward": proxy, "mean_logprob": logprob, "length": length},
            true,
            pairwise_similarity=list(similarity.reshape(prompts * m, m)),
        )

    @classmethod
    def make(cls, seed: int, prompts: int = 12, m: int = 8) -> _Data:
        rng = np.random.default_rng(seed)
        quality = rng.normal(size=(prompts, m))
        length = rng.integers(10, 300, (prompts, m)).astype(float)
        proxy = np.round(quality + 0.004 * length + rng.normal(0, 0.5, (prompts, m)), 1)  # ties, and a length bias
        logprob = -1.0 + 0.3 * quality + rng.normal(0, 0.3, (prompts, m))
        embeddings = rng.normal(size=(prompts, m, 4)) + quality[..., None]
        embeddings /= np.linalg.norm(embeddings, axis=2, keepdims=True)
        similarity = np.einsum("pid,pjd->pij", embeddings, embeddings)
        return cls(proxy, quality - 0.003 * length, logprob, length, similarity)

    def extras_of(self, mechanism: Mechanism, prompt: int, rows: np.ndarray) -> dict[str, FloatArray]:
        """The columns ``mechanism`` reads besides the proxy, for drawn sets ``rows`` (sets x k)."""
        wanted = _extras(mechanism)
        columns = {"mean_logprob": self.logprob[prompt], "length": self.length[prompt]}
        out = {}
        for name in wanted:
            if name == "pairwise_similarity":
                out[name] = self.similarity[prompt][rows[:, :, None], rows[:, None, :]]
            else:
                out[name] = columns[name][rows]
        return out


def _extras(mechanism: Mechanism) -> tuple[str, ...]:
    """The columns a mechanism reads besides the proxy (set rules name them)."""
    extras = getattr(mechanism, "extras", None)
    return tuple(extras()) if callable(extras) else ()


def _moderate_theta(template: Mechanism, table: RewardTable) -> float:
    """A parameter a third of the way along the default grid where the pools still support a
    deployment (no mass past the pool)."""
    from .curves import as_pools

    pools = as_pools(table, None, template)
    m = pools.min_size
    grid = [float(t) for t in template.default_grid(pools, "unbiased")
            if not template.deployable or template.pool_tail(float(t), m) < 1e-6]
    grid = [t for t in grid if t > template.reference_theta] or [template.reference_theta]
    theta = grid[len(grid) // 3]
    return float(round(theta)) if template.integer_parameter else theta


def _has_density(mech: Mechanism) -> bool:
    try:
        mech.cdf(np.array([0.5]))
    except ValueError:
        return False
    return True


def _check_density(mech: Mechanism, seed: int) -> None:
    u = np.linspace(0.05, 0.95, 19)
    draws = mech.sample_quantiles(200_000, rng=seed)
    cdf = mech.cdf(u)
    empirical = (draws[:, None] <= u[None, :]).mean(axis=0)
    se = np.sqrt(np.maximum(cdf * (1 - cdf), 1e-12) / draws.size)
    _near(empirical, cdf, TOLERANCE_SE * se, f"{mech!r}: CDF against a simulation of its sampler")
    h = 1e-6
    _near(mech.pdf(u), (mech.cdf(u + h) - mech.cdf(u - h)) / (2 * h), 1e-5 * (1 + np.abs(mech.pdf(u))),
          f"{mech!r}: density against differences of the CDF")
    if mech.has_derivative and not mech.integer_parameter and mech.theta > mech.reference_theta:
        step = 1e-6 * max(1.0, mech.theta)
        numeric = (mech.with_theta(mech.theta + step).cdf(u) - mech.with_theta(mech.theta - step).cdf(u)) / (2 * step)
        _near(mech.cdf_dtheta(u), numeric, 1e-5 * (1 + np.abs(numeric)), f"{mech!r}: CDF derivative in {mech.parameter}")
    mean_se = float(draws.std()) / np.sqrt(draws.size)
    _near(np.array([mech.mean()]), np.array([draws.mean()]), TOLERANCE_SE * mean_se, f"{mech!r}: mean quantile")


def _check_deployment(mech: Mechanism, data: _Data, seed: int, draws: int = 3000) -> None:
    """The unbiased curve at ``mech``'s parameter against simulated deployments on the pools."""
    from .curves import curve

    c = curve(data.table, mech, [mech.theta], estimator="unbiased", bootstrap=0)
    rng = np.random.default_rng(seed)
    prompts, m = data.proxy.shape
    values = np.empty((prompts, draws))
    for p in range(prompts):
        counts = np.minimum(mech.draw_n(draws, rng), m)  # the tail past the pool is below 1e-6 here
        for k in np.unique(counts):
            at = np.flatnonzero(counts == k)
            rows = np.argsort(rng.random((at.size, m)), axis=1)[:, :k]  # k of m without replacement
            scores = data.proxy[p][rows]
            extras = data.extras_of(mech, p, rows)
            chosen = mech.select(scores, rng=rng, extras=extras) if extras else mech.select(scores, rng=rng)  # type: ignore[call-arg]
            values[p, at] = data.true[p][rows[np.arange(at.size), chosen]]
    simulated = float(values.mean())
    se = float(np.sqrt((values.var(axis=1, ddof=1) / draws).sum()) / prompts)  # of the mean of prompt means
    mc = 0.0 if c.monte_carlo_se is None else float(np.asarray(c.monte_carlo_se)[0])
    _near(np.array([c.true_reward[0]]), np.array([simulated]), TOLERANCE_SE * np.hypot(se, mc),
          f"{mech!r}: the curve's deployed value against simulated deployments (select on fresh draws)")


def _check_library(name: str, template: Mechanism, options: dict[str, Any], theta: float, table: RewardTable) -> list[str]:
    import hedgetune as ht

    for estimator in ("unbiased", "plugin"):
        try:
            c = ht.curve(table, name, bootstrap=20, estimator=estimator, **options)
        except ValueError as exc:
            assert estimator == "plugin" and "without replacement" in str(exc), f"curve ({estimator}): {exc}"
            continue
        assert np.all(np.isfinite(c.true_reward)) and c.template.name == name, f"curve ({estimator})"
        json.dumps(c.to_dict(), allow_nan=False)
    result = ht.tune(table, name, bootstrap=30, **options)
    assert np.isfinite(result.true_reward) and result.template.name == name, "tune"
    json.dumps(result.to_dict(), allow_nan=False)
    diagnosis = ht.diagnose(table, name, bootstrap=20, **options)
    assert template.display_name in diagnosis.sentence(), "diagnose names the mechanism"
    json.dumps(diagnosis.to_dict(), allow_nan=False)
    json.dumps(ht.evaluate(table, name, repeats=2, bootstrap=10, **options).to_dict(), allow_nan=False)
    with tempfile.TemporaryDirectory() as folder:
        _check_command_line(name, template, options, theta, table, Path(folder))
        _check_report(name, options, table, Path(folder))
    done = ["curve", "tune", "diagnose", "evaluate", "command line", "report"]
    if _check_gateway(name, template.with_theta(theta), options):
        done.append("gateway")
    return done


def _flags(options: dict[str, Any]) -> list[str]:
    return [part for key, value in options.items() for part in (f"--{key}", str(value))]


def _check_command_line(
    name: str, template: Mechanism, options: dict[str, Any], theta: float, table: RewardTable, folder: Path
) -> None:
    from click.testing import CliRunner

    from .cli import main
    from .io import write_table

    path = write_table(table, folder / "t.parquet")
    runner = CliRunner()
    for args in (
        ["curve", str(path), "-m", name, *_flags(options), "--bootstrap", "10", "--json"],
        ["tune", str(path), "-m", name, *_flags(options), "--bootstrap", "10", "--json"],
        ["evaluate", str(path), "-m", name, *_flags(options), "--bootstrap", "10", "--repeats", "2", "--json"],
    ):
        out = runner.invoke(main, args)
        assert out.exit_code == 0, f"hedgetune {' '.join(args)}: {out.output}"
        json.loads(out.stdout)
    if not _extras(template):  # the command line's select reads scores only
        scores = "0.1 0.5 0.3 0.2\n0.9 0.2 0.4 0.8\n"
        out = runner.invoke(main, ["select", "-m", name, *_flags(options), "--theta", str(theta)], input=scores)
        assert out.exit_code == 0, f"hedgetune select -m {name}: {out.output}"


def _check_report(name: str, options: dict[str, Any], table: RewardTable, folder: Path) -> None:
    from .report.analysis import analyse, write_report

    analysis = analyse(table, "conformance", mechanisms={name: (name, options)}, repeats=2, bootstrap=10)
    page = write_report([analysis], folder / "report")
    assert page.is_file() and lookup(name).display_name in page.read_text(), "the report shows the mechanism"


def _check_gateway(name: str, mech: Mechanism, options: dict[str, Any]) -> bool:
    """A servable mechanism's policy served by the gateway in front of a scripted upstream."""
    from .mechanisms.registry import servable

    try:
        servable(mech)
    except ValueError:
        return False
    import httpx
    from starlette.testclient import TestClient

    from .gateway import Policy
    from .gateway.app import make_app

    def upstream(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = int(body.get("n", 1))
        choices = [{"index": i, "text": "w " * (i + 1), "finish_reason": "stop",
                    "logprobs": {"token_logprobs": [-0.1] * (i + 1)}} for i in range(n)]
        return httpx.Response(200, json={"id": "x", "object": "text_completion", "choices": choices,
                                         "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": 1 + n}})

    policy = Policy(mechanism=name, theta=mech.theta, proxy="length", options=options)
    with TestClient(make_app("http://upstream", policy, transport=httpx.MockTransport(upstream), seed=0)) as client:
        reply = client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
    assert reply.status_code == 200, f"the gateway serving {name}: {reply.text}"
    assert reply.json()["hedgetune"]["mechanism"] == name, "the gateway reports the mechanism it served"
    return True


def _near(actual: FloatArray, expected: FloatArray, tolerance: Any, what: str) -> None:
    gap = np.abs(np.asarray(actual, dtype=float) - np.asarray(expected, dtype=float))
    if not np.all(gap <= tolerance):
        worst = int(np.argmax(gap - tolerance))
        raise AssertionError(f"{what}: {np.ravel(actual)[worst]:.6g} vs {np.ravel(expected)[worst]:.6g} "
                             f"(allowed {np.ravel(np.broadcast_to(tolerance, gap.shape))[worst]:.3g})")
