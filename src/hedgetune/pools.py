"""Pools: each prompt's responses sorted once by proxy, grouped by pool size (docs/SPEC.md §3).

This is the only place that sorts. Within a pool of size ``m`` sorted ascending by proxy, a
rank-based mechanism returns position ``i`` with a probability that depends only on ``i`` and
``m``; so the mean curve over prompts needs only the rank-averaged true rewards of each size group.
Tied proxies share their group's probability equally (a mechanism breaks ties at random), which is
the same as giving every member the tie group's mean true reward.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._threads import THREAD_VALUES, over_row_blocks, row_workers
from .arrays import FloatArray, IntArray
from .mechanisms._compiled import SMALL_CALL, Engine, kernel_for
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
    #: For pools selected from others (:func:`select_prompts`): these prompts' positions there,
    #: where :class:`SharedValues` keeps their values.
    source: IntArray | None = None

    @property
    def size(self) -> int:
        return int(self.prompts.size)

    @functools.cached_property
    def true_sum(self) -> FloatArray:
        """(m,) sum over prompts of each sorted position's true reward (computed once: a tune
        asks for it at every step)."""
        return self.true.sum(axis=0)

    @functools.cached_property
    def proxy_sum(self) -> FloatArray:
        """(m,) sum over prompts of each sorted position's proxy reward (computed once)."""
        return self.proxy.sum(axis=0)

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

    def take(self, rows: IntArray, prompts: IntArray, source: IntArray | None = None) -> SizeGroup:
        """The group of these ``rows`` only, numbered ``prompts``."""
        extras = {name: values[rows] for name, values in self.extras.items()}
        return SizeGroup(self.m, prompts, self.proxy[rows], self.true[rows], self.has_ties[rows], extras, source)


@dataclass(frozen=True)
class Pools:
    """A table's prompts as sorted pools, grouped by pool size. Consumers only iterate ``groups``
    (:class:`hedgetune.StreamedPools` yields them from disk, a chunk at a time)."""

    groups: Iterable[SizeGroup]
    n_prompts: int
    proxy_name: str
    #: Values per prompt kept for the pools of subsets of these prompts (see :func:`select_prompts`).
    shared: SharedValues | None = field(default=None, compare=False, repr=False)

    def with_shared(self, shared: SharedValues) -> Pools:
        """The same pools, keeping ``shared`` for the pools of subsets of their prompts."""
        return dataclasses.replace(self, shared=shared)

    @property
    def max_size(self) -> int:
        return max(g.m for g in self.groups)

    @property
    def min_size(self) -> int:
        return min(g.m for g in self.groups)

    @property
    def reward_scale(self) -> float:
        """The largest |true reward|: differences far below it are rounding, not signal."""
        low, high = self.reward_range
        return max(-low, high)

    @functools.cached_property
    def reward_range(self) -> tuple[float, float]:
        """The smallest and largest true reward (computed once)."""
        groups = list(self.groups)
        return min(float(g.true.min()) for g in groups), max(float(g.true.max()) for g in groups)

    def size_counts(self) -> list[tuple[int, int]]:
        """``(pool size m, number of prompts)`` for every pool size."""
        return [(g.m, g.size) for g in self.groups]

    def reference_sum(self) -> float:
        """The sum over prompts of the pool's mean true reward (the reference policy's)."""
        return sum(float(g.true.mean(axis=1).sum()) for g in self.groups)


@dataclass
class SharedValues:
    """Each prompt's values at each parameter (its expected true reward, quantile, proxy, pool KL,
    ...), for one mechanism and estimator (``key``), kept over whole ``pools`` as they are computed
    by the pools of subsets of their prompts (:func:`select_prompts`). A prompt's values depend on
    its own pool only, so :func:`hedgetune.evaluate`'s splits compute each once, not once per split
    (:mod:`hedgetune.curves` fills and reads them)."""

    pools: Pools
    key: tuple[Any, ...]
    #: parameter -> name -> values over the whole pools' prompts (NaN where not yet computed)
    values: dict[float, dict[str, FloatArray]] = field(default_factory=dict)


def select_prompts(pools: Pools, positions: IntArray) -> Pools:
    """The pools of the prompts at ``positions`` (ascending) of in-memory ``pools``, numbered
    ``0 .. len(positions) - 1`` in that order: what :func:`build_pools` gives for
    ``table.subset(positions)``, without sorting again. They keep ``pools.shared``: their values
    are read from it and added to it."""
    positions = np.asarray(positions, dtype=np.intp)
    if positions.ndim != 1 or np.any(np.diff(positions) <= 0):
        raise ValueError("positions must be ascending and distinct")
    renumber = np.full(pools.n_prompts, -1, dtype=np.intp)
    renumber[positions] = np.arange(positions.size)
    groups = []
    for group in pools.groups:
        rows = np.flatnonzero(renumber[group.prompts] >= 0)
        if rows.size:
            picked = group.prompts[rows]
            groups.append(group.take(rows, renumber[picked], picked))
    return Pools(groups, int(positions.size), pools.proxy_name, pools.shared)


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

        order, (sorted_proxy, sorted_true, *carried), ties = _sort_rows(
            matrix(scores),
            [matrix(true), *(matrix(values) for values in covariates.values())],
            keep_order="pairwise_similarity" in extras,
        )
        extra = dict(zip(covariates, carried, strict=True))
        if "pairwise_similarity" in extras:
            assert table.pairwise_similarity is not None
            block_starts = np.concatenate([[0], np.cumsum(sizes**2)])[:-1]
            cells = block_starts[prompts][:, None] + np.arange(m * m)[None, :]
            blocks = table.pairwise_similarity[cells].reshape(-1, m, m)
            assert order is not None
            blocks = np.take_along_axis(blocks, order[:, :, None], axis=1)
            extra["pairwise_similarity"] = np.take_along_axis(blocks, order[:, None, :], axis=2)
        if extras:  # mechanisms that look past the proxy see each response's own true reward
            extra[UNAVERAGED_TRUE] = sorted_true.copy()
        if ties.any():
            sorted_true[ties] = average_over_ties(sorted_proxy[ties], sorted_true[ties])
        groups.append(SizeGroup(int(m), prompts, sorted_proxy, sorted_true, ties, extra))
    return Pools(tuple(groups), table.n_prompts, proxy or table.proxy)


def _sort_rows(
    scores: FloatArray, columns: Sequence[FloatArray], keep_order: bool = False, engine: Engine = "auto"
) -> tuple[IntArray | None, list[FloatArray], NDArray[np.bool_]]:
    """Each row of ``scores`` ascending, ``columns`` (same shape) in the same order, whether each
    row has tied scores, and (with ``keep_order``) the order itself.

    Blocks of rows run on worker threads (NumPy's sort and take release the GIL). The order comes
    from sorting packed keys (:func:`_sorted_keys`) and is checked on the sorted scores; the values
    are gathered through flat indices, several times faster than ``take_along_axis``. With the
    ``fast`` extra (``engine``, as in :func:`hedgetune.mechanisms.toolkit.argmax_random_ties`), the
    steps after the sort run as one compiled pass per row, for the common case: the true rewards
    alone carried along, the order not kept.
    """
    rows, m = scores.shape
    sources = [np.ascontiguousarray(a).reshape(-1) for a in (scores, *columns)]
    order = np.empty((rows, m), dtype=np.intp) if keep_order else None
    outputs = [np.empty((rows, m), dtype=a.dtype) for a in sources]
    ties = np.zeros(rows, dtype=bool)
    matrices = [a.reshape(rows, m) for a in sources]
    status = np.empty(rows, dtype=np.int8)  # the compiled pass's verdict on each row
    simple = len(columns) == 1 and not keep_order and all(a.dtype == np.float64 for a in sources) and _packable(m)
    kernel = kernel_for(engine, "_pools_compiled", rows * m, SMALL_CALL) if simple else None

    def gather(at: IntArray, positions: IntArray) -> None:
        """Rows ``at`` of every output, in the order ``positions`` (overwritten)."""
        if order is not None:
            order[at] = positions
        positions += (at * m)[:, None]  # flat indices
        for source, out in zip(sources, outputs, strict=True):
            if at.size and at[-1] - at[0] == at.size - 1:  # a block of rows: gather in place
                np.take(source, positions, out=out[at[0] : at[-1] + 1])
            else:
                out[at] = np.take(source, positions)

    def check(start: int, suspect: IntArray) -> None:
        """Rows ``start + suspect`` have equal or decreasing neighbours: sort the decreasing ones
        exactly (scores that agree in all but their last bits) and mark the tied ones."""
        close = outputs[0][start + suspect]
        disorder = suspect[np.any(close[:, 1:] < close[:, :-1], axis=1)]
        if disorder.size:
            gather(start + disorder, np.argsort(scores[start + disorder], axis=1, kind="stable"))
            close = outputs[0][start + suspect]
        ties[start + suspect] = np.any(close[:, 1:] == close[:, :-1], axis=1)

    def fill(start: int, stop: int) -> None:
        if kernel is not None:
            keys, low = _sorted_keys(scores[start:stop])
            kernel.gather_sorted(keys, low, matrices[0], matrices[1], outputs[0], outputs[1], status, start, stop)
            check(start, np.flatnonzero(status[start:stop] != kernel.ORDERED))
            return
        gather(np.arange(start, stop), _packed_order(scores[start:stop]))
        ranked = outputs[0][start:stop]
        check(start, np.flatnonzero(np.any(ranked[:, 1:] <= ranked[:, :-1], axis=1)))

    over_row_blocks(rows, row_workers(rows, max(1, THREAD_VALUES // max(m, 1))), fill)
    return order, outputs, ties


def _packable(m: int) -> bool:
    """Whether a column index of rows of ``m`` fits in the low mantissa bits (leaving at least 12)."""
    return (m - 1).bit_length() <= 40


def _sorted_keys(scores: FloatArray) -> tuple[NDArray[np.uint64], np.uint64]:
    """Each row sorted as packed keys, and the mask of their column bits: each score with its lowest
    ``ceil(log2 m)`` mantissa bits replaced by its column (one sort of floats, which NumPy does
    about twice as fast as an argsort). Scores that agree in all their other bits may come out in
    the wrong order; :func:`_sort_rows` checks. (The table's scores are finite, so no key becomes
    NaN.)"""
    m = scores.shape[1]
    low = np.uint64((1 << max(1, (m - 1).bit_length())) - 1)
    keys = np.ascontiguousarray(scores, dtype=np.float64).view(np.uint64) & ~low
    keys |= np.arange(m, dtype=np.uint64)
    keys.view(np.float64).sort(axis=1)
    return keys, low


def _packed_order(scores: FloatArray) -> IntArray:
    """A candidate for each row's ascending order, read out of :func:`_sorted_keys`; rows of other
    dtypes, or too wide to spare the bits, are argsorted."""
    if scores.dtype != np.float64 or not _packable(scores.shape[1]):
        return np.argsort(scores, axis=1, kind="stable")
    keys, low = _sorted_keys(scores)
    keys &= low
    return keys.view(np.intp)
