"""Synthetic calibration tables whose true reward is a known function of the proxy quantile.

The proxy of each response is drawn i.i.d. (standard normal by default, or resampled from real
proxy scores); its quantile ``u`` under that distribution is exact; the true reward is
``R(u) + noise * N(0, 1)``. Use them for tests, examples, and to see how a mechanism behaves when
the answer is known.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .arrays import FloatArray
from .table import RewardTable

RewardShape = Callable[[FloatArray], FloatArray]
_TOY_C = (12 / 13) ** 12 / 13


def toy_reward(u: FloatArray) -> FloatArray:
    """The paper's toy: ``R(u) = u^12 (1 - u) / C`` with its peak 1 at ``u = 12/13``."""
    return np.asarray(u) ** 12 * (1 - np.asarray(u)) / _TOY_C


def tent_reward(peak: float) -> RewardShape:
    """A tent rising linearly from 0 at ``u = 0`` to 1 at ``u = peak`` and back to 0 at ``u = 1``."""
    if not 0 < peak < 1:
        raise ValueError(f"peak must lie in (0, 1), got {peak}")

    def shape(u: FloatArray) -> FloatArray:
        u = np.asarray(u, dtype=float)
        return np.where(u <= peak, u / peak, (1 - u) / (1 - peak))

    return shape


SHAPES: dict[str, RewardShape] = {
    "toy": toy_reward,
    "increasing": lambda u: np.asarray(u, dtype=float),
    "decreasing": lambda u: 1 - np.asarray(u, dtype=float),
    # u + sin(2 pi u): the first push up the proxy lands on the falling part, the top is best.
    "dip": lambda u: np.asarray(u, dtype=float) + np.sin(2 * np.pi * np.asarray(u, dtype=float)),
    "flat": lambda u: np.zeros_like(np.asarray(u, dtype=float)),
}


def reward_shape(name: str | RewardShape) -> RewardShape:
    """A named shape (``toy``, ``increasing``, ``decreasing``, ``dip``, ``flat``, ``tent:0.9``)."""
    if callable(name):
        return name
    if name.startswith("tent:"):
        return tent_reward(float(name.split(":", 1)[1]))
    if name not in SHAPES:
        raise ValueError(f"unknown reward shape {name!r}; choose one of {[*SHAPES, 'tent:<peak>']}")
    return SHAPES[name]


def make_table(
    reward: str | RewardShape,
    prompts: int,
    samples: int,
    *,
    noise: float = 0.0,
    proxy_scores: ArrayLike | None = None,
    seed: int | None = 0,
) -> RewardTable:
    """A synthetic table of ``prompts x samples`` responses.

    ``proxy_scores``, if given, are real proxy rewards to resample from (their empirical
    distribution replaces the normal); the quantile of a resampled score is its mid-rank in them.
    """
    if prompts < 1 or samples < 2:
        raise ValueError(f"need at least 1 prompt and 2 samples per prompt, got {prompts} x {samples}")
    shape = reward_shape(reward)
    rng = np.random.default_rng(seed)
    if proxy_scores is None:
        proxy = rng.standard_normal((prompts, samples))
        u = special.ndtr(proxy)  # the standard normal CDF
    else:
        pool = np.sort(np.asarray(proxy_scores, dtype=float).ravel())
        if pool.size < 2 or not np.all(np.isfinite(pool)):
            raise ValueError("proxy_scores must hold at least two finite scores")
        proxy = rng.choice(pool, size=(prompts, samples))
        below = np.searchsorted(pool, proxy, side="left")
        upto = np.searchsorted(pool, proxy, side="right")
        u = (below + upto) / (2 * pool.size)
    true = shape(u) + noise * rng.standard_normal((prompts, samples))
    label = reward if isinstance(reward, str) else getattr(reward, "__name__", "custom")
    return RewardTable.from_arrays(
        {"proxy_reward": proxy},
        true,
        provenance={
            "proxy_reward": "synthetic: standard normal" if proxy_scores is None else "synthetic: resampled",
            "true_reward": f"synthetic: R(u) = {label}, noise sd {noise:g}",
        },
    )
