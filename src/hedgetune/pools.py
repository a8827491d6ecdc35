"""Pools: each prompt's responses sorted once by proxy, grouped by pool size.

This is the only place that sorts. Within a pool of size ``m`` sorted ascending by proxy, a
rank-based mechanism returns position ``i`` with a probability that depends only on ``i`` and
``m``; so the mean curve over prompts needs only the rank-averaged true rewards of each size group.
Tied proxies share their group's probability equally (a mechanism breaks ties at random), which is
the same as giving every member the tie group's mean true reward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .arrays import FloatArray, IntArray
from .mechanisms.toolkit import average_over_ties
from .table import RewardTable, TableError

#: Key in :attr:`SizeGroup.extras` of the true rewards before averaging within proxy ties (a
#: mechanism that also looks at covariates can tell tied-proxy responses apart).
UNAVERAGED_TRUE = "true_reward"


@dataclass(frozen=True)
class SizeGroup:
    """All prompts whose pool has ``m`` responses, each row sorted ascending by proxy."""

    m: int
    prompts: IntArray  #: positions of these prompts in the table
    proxy: FloatArray  #: (P_m, m) raw proxy rewards, ascending per row
    true: FloatArray  #: (P_m, m) true rewards in the same order, averaged within tie groups
    has_ties: NDArray[np.bool_]  #: (P_m,) whether the row has tied proxies
    #: Other per-response columns a mechanism asked for, in the same order: (P_m, m) for a proxy
    #: column (a covariate such as ``length``), (P_m, m, m) for ``"pairwise_similarity"``.
    extras: Mapping[str, FloatArray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.prompts.size)

    def quantiles(self) -> FloatArray:
        """(P_m, m) within-pool mid-rank quantiles ``(i - 1/2)/m``, averaged within tie groups."""
        q = np.broadcast_to((np.arange(1, self.m + 1) - 0.5) / self.m, self.proxy.shape).copy()
        if self.has_ties.any():
            q[self.has_ties] = average_over_ties(self.proxy[self.has_ties], q[self.has_ties])
        return q

    def quantile_sum(self) -> FloatArray:
        """Sum over prompts of :meth:`quantiles`, without building the matrix when there are no ties."""
        base = (np.arange(1, self.m + 1) - 0.5) / self.m * (self.size - int(self.has_ties.sum()))
        if self.has_ties.any():
            tied = self.proxy[self.has_ties]
            q = np.broadcast_to((np.arange(1, self.m + 1) - 0.5) / self.m, tied.shape).copy()
            base = base + average_over_ties(tied, q).sum(axis=0)
        return base


@dataclass(frozen=True)
class Pools:
    """A table's prompts as sorted pools, grouped by pool size. Consumers only iterate ``groups``
    (:class:`hedgetune.StreamedPools` yields them from disk, a chunk at a time)."""

    groups: Iterable[SizeGroup]
    n_prompts: int
    proxy_name: str

    @property
    def max_size(self) -> int:
        return max(g.m for g in self.groups)

    @property
    def min_size(self) -> int:
        return min(g.m for g in self.groups)

    @property
    def reward_scale(self) -> float:
        """The largest |true reward|: differences far below it are rounding, not signal."""
        return max(float(np.abs(g.true).max()) for g in self.groups)

    @property
    def reward_range(self) -> tuple[float, float]:
        """The smallest and largest true reward."""
        groups = list(self.groups)
        return min(float(g.true.min()) for g in groups), max(float(g.true.max()) for g in groups)

    def size_counts(self) -> list[tuple[int, int]]:
        """``(pool size m, number of prompts)`` for every pool size."""
        return [(g.m, g.size) for g in self.groups]

    def reference_sum(self) -> float:
        """The sum over prompts of the pool's mean true reward (the reference policy's)."""
        return sum(float(g.true.mean(axis=1).sum()) for g in self.groups)


def build_pools(table: RewardTable, proxy: str | None = None, extras: Sequence[str] = ()) -> Pools:
    """Sort every prompt's pool once by the chosen proxy (``table.proxy`` by default); ``extras``
    names other columns to carry along in the same order (proxy columns used as covariates, or
    ``"pairwise_similarity"``)."""
    scores = table.proxy_values(proxy)
    covariates = {name: table.proxy_values(name) for name in extras if name != "pairwise_similarity"}
    if "pairwise_similarity" in extras and table.pairwise_similarity is None:
        raise TableError(
            "this mechanism needs pairwise similarities between each prompt's responses: the table has "
            "no 'pairwise_similarity' column (see `hedgetune score --pairwise-similarity` or RewardTable.from_long(pairwise_similarity=...))"
        )
    true = table.require_true_reward()
    sizes = table.pool_sizes
    groups = []
    for m in np.unique(sizes):
        prompts = np.flatnonzero(sizes == m)
        whole = prompts.size == table.n_prompts  # one pool size: the flat columns reshape without a copy
        rows = None if whole else table.offsets[prompts][:, None] + np.arange(m)[None, :]

        def matrix(values: FloatArray, m: int = m, rows: IntArray | None = rows) -> FloatArray:
            """A per-response column as this group's (prompts, m) matrix, in table order."""
            return values.reshape(-1, m) if rows is None else values[rows]

        raw, gold = matrix(scores), matrix(true)
        order = np.argsort(raw, axis=1)  # tie order is irrelevant: tie groups are averaged below
        sorted_proxy = np.take_along_axis(raw, order, axis=1)
        sorted_true = np.take_along_axis(gold, order, axis=1)
        extra = {name: np.take_along_axis(matrix(values), order, axis=1) for name, values in covariates.items()}
        if "pairwise_similarity" in extras:
            assert table.pairwise_similarity is not None
            block_starts = np.concatenate([[0], np.cumsum(sizes**2)])[:-1]
            cells = block_starts[prompts][:, None] + np.arange(m * m)[None, :]
            blocks = table.pairwise_similarity[cells].reshape(-1, m, m)
            blocks = np.take_along_axis(blocks, order[:, :, None], axis=1)
            extra["pairwise_similarity"] = np.take_along_axis(blocks, order[:, None, :], axis=2)
        if extras:  # mechanisms that look past the proxy see each response's own true reward
            extra[UNAVERAGED_TRUE] = sorted_true.copy()
        ties = np.any(sorted_proxy[:, 1:] == sorted_proxy[:, :-1], axis=1)
        if ties.any():
            sorted_true[ties] = average_over_ties(sorted_proxy[ties], sorted_true[ties])
        groups.append(SizeGroup(int(m), prompts, sorted_proxy, sorted_true, ties, extra))
    return Pools(tuple(groups), table.n_prompts, proxy or table.proxy)
