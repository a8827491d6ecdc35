"""Vectorised selection over pools of scored candidates (prompts x candidates).

A pool is a 2-D float array, one row per prompt; ``NaN`` marks a missing candidate, so ragged pools
(Best-of-Poisson draws a different number per prompt) fit in one matrix. A list of 1-D arrays is
padded into that form. No Python loop runs over candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._threads import over_row_blocks, row_workers
from ..arrays import IntArray as IntArray
from ._compiled import SMALL_CALL, Engine, kernel_for
from ._numerics import FloatArray, as_float_array


def as_pool_matrix(
    scores: ArrayLike | Sequence[ArrayLike], name: str = "scores", check_values: bool = True
) -> FloatArray:
    """Validate candidate scores and return them as a NaN-padded 2-D float matrix.

    Accepts a 2-D array (prompts x candidates, ``NaN`` = missing) or a sequence of 1-D arrays (one
    per prompt, any lengths). Raises ``ValueError`` for an empty pool, a prompt with no candidate,
    infinite scores or arrays of the wrong dimension; ``TypeError`` for non-numeric values.
    ``check_values=False`` leaves the values (infinities, empty prompts) to the caller: see
    :func:`check_scores`.
    """
    if isinstance(scores, list | tuple) and len(scores) > 0 and any(np.ndim(s) != 0 for s in scores):
        rows = [as_float_array(s, f"{name}[{i}]") for i, s in enumerate(scores)]
        for i, row in enumerate(rows):
            if row.ndim != 1:
                raise ValueError(f"{name}[{i}] must be 1-D (one prompt's candidates), got shape {row.shape}")
        width = max(row.size for row in rows)
        matrix = np.full((len(rows), width), np.nan)
        for i, row in enumerate(rows):  # a loop over prompts, not candidates
            matrix[i, : row.size] = row
    else:
        matrix = as_float_array(scores, name)  # type: ignore[arg-type]
        if matrix.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (prompts x candidates) or a list of 1-D arrays, "
                f"got an array of shape {matrix.shape}"
            )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {matrix.shape}); every prompt needs a candidate")
    if check_values:
        check_scores(matrix, name)
    return matrix


def check_scores(matrix: FloatArray, name: str = "scores") -> None:
    """Raise ``ValueError`` for an infinite score or a prompt whose every score is NaN."""
    if np.isfinite(matrix.sum()):  # one fast pass: no NaN and no infinity anywhere
        return
    if np.isinf(matrix).any():
        bad = int(np.flatnonzero(np.isinf(matrix).any(axis=1))[0])
        raise ValueError(f"{name} contains an infinite score (prompt {bad}); scores must be finite")
    empty_rows = np.isnan(matrix).all(axis=1)
    if empty_rows.any():
        bad = int(np.flatnonzero(empty_rows)[0])
        raise ValueError(f"{name}: prompt {bad} has no candidate (every score is NaN)")


#: Fewest rows per thread of a compiled selection kernel.
_KERNEL_ROWS = 1024
# Rows per block in the selection kernels: a block of scores stays in cache between passes.
_BLOCK_ROWS = 2048
#: Scores per block in the softmax sampler, and the widest row it cumulates with a matrix product.
_BLOCK_ELEMENTS, _TRIANGULAR_WIDTH = 1 << 20, 256


def _row_max(block: FloatArray) -> FloatArray:
    """Row maxima ignoring NaN (every row has at least one number)."""
    row_max = block.max(axis=1)
    nan_rows = np.isnan(row_max)
    if nan_rows.any():
        row_max[nan_rows] = np.nanmax(block[nan_rows], axis=1)
    return row_max


def argmax_random_ties(
    scores: FloatArray, rng: np.random.Generator, engine: Engine = "auto", check_values: bool = False
) -> IntArray:
    """Index of the highest score per row, ties broken uniformly at random, NaN ignored.

    With ``check_values``, scores not yet checked by :func:`as_pool_matrix` are checked here, with
    its errors (an infinite score, a prompt with every score NaN). ``engine``: ``"compiled"``
    ``np.argmax`` and then one pass per row in a Numba kernel that checks the row and counts ties
    (threads over blocks of rows), ``"numpy"`` the vectorised route, ``"auto"`` the kernel when
    Numba is installed and there are at least ``SMALL_CALL`` scores. Both break ties
    with the same draws, so they choose the same candidates.
    """
    kernel = kernel_for(engine, "_selection_compiled", scores.size, SMALL_CALL)
    rows = scores.shape[0]
    if kernel is None:
        if check_values:
            check_scores(scores)
        return _argmax_random_ties(scores, rng)
    matrix = np.ascontiguousarray(scores, dtype=float)
    choice = np.empty(rows, dtype=np.intp)
    status = np.empty(rows, dtype=np.int8)

    def fill(start: int, stop: int) -> None:
        for low in range(start, stop, _BLOCK_ROWS):  # blocks that stay in cache for the second pass
            high = min(stop, low + _BLOCK_ROWS)
            choice[low:high] = matrix[low:high].argmax(axis=1)
            kernel.ties_at_top(matrix, choice, status, low, high)

    over_row_blocks(rows, row_workers(rows, _KERNEL_ROWS), fill)
    if check_values and (status >= kernel.INFINITE).any():
        check_scores(matrix)  # raises, naming the first bad prompt
    tied = status == kernel.TIED
    if tied.any():
        for start in range(0, rows, _BLOCK_ROWS):  # the NumPy route's blocks: the same draws
            where = start + np.flatnonzero(tied[start : start + _BLOCK_ROWS])
            if where.size:
                top = matrix[where, choice[where]]
                choice[where] = _break_ties(matrix[where] == top[:, None], rng)
    return choice


def _argmax_random_ties(scores: FloatArray, rng: np.random.Generator) -> IntArray:
    """The NumPy route of :func:`argmax_random_ties`."""
    choice = np.empty(scores.shape[0], dtype=np.intp)
    for start in range(0, scores.shape[0], _BLOCK_ROWS):  # blocks of prompts, for cache reuse
        block = scores[start : start + _BLOCK_ROWS]
        first = block.argmax(axis=1)  # a NaN row max shows up as NaN at ``first``
        row_max = block[np.arange(block.shape[0]), first]
        has_nan = bool(np.isnan(row_max).any())
        if has_nan:
            row_max = _row_max(block)
        is_max = block == row_max[:, None]
        if has_nan:
            first = is_max.argmax(axis=1)
        if np.count_nonzero(is_max) > block.shape[0]:  # some row has a tie at the top
            tied_rows = np.flatnonzero(np.count_nonzero(is_max, axis=1) > 1)
            first[tied_rows] = _break_ties(is_max[tied_rows], rng)
        choice[start : start + block.shape[0]] = first
    return choice


def _break_ties(is_max: NDArray[np.bool_], rng: np.random.Generator) -> IntArray:
    """A uniformly random column among each row's ``True`` ones (one draw per cell)."""
    keys = np.where(is_max, rng.random(is_max.shape), -1.0)
    return keys.argmax(axis=1)


def sample_from_weights(weights: FloatArray, rng: np.random.Generator) -> IntArray:
    """Draw one column per row with probability proportional to the non-negative ``weights``.

    Inverse-CDF sampling on the row-wise cumulative sum; zero-weight columns are never drawn.
    """
    cumulative = np.cumsum(weights, axis=1)
    return _invert_cumulative(cumulative, weights, rng.random((weights.shape[0],)))


def _invert_cumulative(cumulative: FloatArray, weights: FloatArray, uniform: FloatArray) -> IntArray:
    """First column whose cumulative weight exceeds ``uniform * total``, per row."""
    target = uniform * cumulative[:, -1]
    choice: IntArray = np.count_nonzero(cumulative <= target[:, None], axis=1)
    # Guard the rounding case target == total: fall back to the last positive weight.
    overflow = choice >= weights.shape[1]
    if overflow.any():
        choice[overflow] = weights.shape[1] - 1 - (weights[overflow, ::-1] > 0).argmax(axis=1)
    return choice


def sample_softmax(scores: FloatArray, beta: float, rng: np.random.Generator, engine: Engine = "auto") -> IntArray:
    """Draw column ``j`` of each row with probability ``exp(beta s_j) / sum_k exp(beta s_k)``.

    Missing (NaN) candidates get weight 0. Weights are formed relative to the row maximum (no
    overflow). ``engine``: ``"compiled"`` one pass per row in a Numba kernel
    (:mod:`._selection_compiled`, threads over blocks of rows), ``"numpy"`` the vectorised route
    below, ``"auto"`` the kernel when Numba is installed and there are at least
    ``SMALL_CALL`` scores; both draw by inverse CDF from the same
    uniforms, so they agree except within rounding of a cumulative boundary. On the NumPy route
    short rows cumulate by a product with a triangular matrix of ones, which BLAS does far faster
    than ``np.cumsum``; wide rows use ``np.cumsum`` (the matrix would grow as the square of the
    width). Memory stays linear in the input: blocks hold about a million scores.
    """
    kernel = kernel_for(engine, "_selection_compiled", scores.size, SMALL_CALL)
    if not 0.0 <= beta < np.inf:  # the kernel's exponentials assume a finite gap >= 0
        kernel = None
    width = scores.shape[1]
    uniform = rng.random((scores.shape[0],))
    choice = np.empty(scores.shape[0], dtype=np.intp)
    if kernel is not None:
        rows = scores.shape[0]
        matrix = np.ascontiguousarray(scores, dtype=float)
        over_row_blocks(rows, row_workers(rows, _KERNEL_ROWS), lambda a, b: kernel.sample_rows(matrix, beta, uniform, choice, a, b))
        return choice
    upper = np.triu(np.ones((width, width))) if width <= _TRIANGULAR_WIDTH else None
    rows_per_block = max(1, min(_BLOCK_ROWS // 2, _BLOCK_ELEMENTS // width))
    for start in range(0, scores.shape[0], rows_per_block):
        block = scores[start : start + rows_per_block]
        row_max = block.max(axis=1)  # NaN exactly in the rows with a missing candidate
        has_nan = bool(np.isnan(row_max).any())
        if has_nan:
            row_max = _row_max(block)
        weights = block - row_max[:, None]
        with np.errstate(invalid="ignore"):  # beta = 0 times an infinite gap cannot occur: finite scores
            weights *= beta
        np.exp(weights, out=weights)
        if has_nan:  # a missing candidate gets weight 0 (a pass saved when none is missing)
            np.nan_to_num(weights, nan=0.0, copy=False)
        cumulative = weights @ upper if upper is not None else np.cumsum(weights, axis=1)
        stop = start + block.shape[0]
        choice[start:stop] = _invert_cumulative(cumulative, weights, uniform[start:stop])
    return choice


def average_over_ties(sorted_scores: FloatArray, values: FloatArray) -> FloatArray:
    """Replace ``values`` by their mean over each run of equal scores in the row-sorted matrix.

    ``sorted_scores`` is sorted ascending along each row (NaN last); runs of equal scores are tie
    groups. NaN entries form groups of their own and keep their values.
    """
    rows, cols = sorted_scores.shape
    new_group = np.ones((rows, cols), dtype=bool)
    new_group[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    if new_group.all():
        return values
    group = (np.cumsum(new_group, axis=1) + (np.arange(rows) * (cols + 1))[:, None]).ravel()
    sums = np.bincount(group, weights=values.ravel())
    counts = np.bincount(group)
    with np.errstate(invalid="ignore"):
        means = sums / counts
    averaged: FloatArray = means[group].reshape(rows, cols)
    return averaged


def rank_based_choice(
    scores: FloatArray, cdf_on_ranks: Callable[[FloatArray], FloatArray], rng: np.random.Generator
) -> IntArray:
    """Pick one candidate per row with the probability a rank-based mechanism gives its rank.

    With the row's ``m`` candidates sorted ascending, sorted position ``i`` (1-based) gets
    ``Q(i/m) - Q((i-1)/m)``; tied candidates share their group's total equally.
    """
    order = np.argsort(scores, axis=1, kind="stable")  # NaN sorts last
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    m = np.count_nonzero(~np.isnan(scores), axis=1)[:, None]
    i = np.arange(1, scores.shape[1] + 1)[None, :]
    valid = i <= m
    upper = np.where(valid, i / m, 1.0)
    lower = np.where(valid, (i - 1) / m, 1.0)
    probs = np.clip(cdf_on_ranks(upper) - cdf_on_ranks(lower), 0.0, None)
    probs = average_over_ties(sorted_scores, probs)
    position = sample_from_weights(probs, rng)
    chosen: IntArray = np.take_along_axis(order, position[:, None], axis=1)[:, 0]
    return chosen
