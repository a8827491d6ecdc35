"""Shared pieces of the Soft Best-of-n quadratures on finite pools (with and without replacement):
the softmax exponents and the unit cells in ``y = log s`` where each item's kernel lives."""

from __future__ import annotations

import numpy as np

from ._numerics import FloatArray

#: Gaps between neighbouring softmax exponents above this are shrunk to it: exp(-800) underflows,
#: so no softmax over any subset of the items changes, and the exponents stay small.
_MAX_EXPONENT_GAP = 800.0


def softmax_exponents(sorted_scores: FloatArray, beta: float) -> tuple[FloatArray, FloatArray]:
    """Exponents ``z_j = beta (s_j - s_max)`` of ascending rows, and the direction ``z_j / beta``
    in which they move with beta, with every gap between neighbours above 800 shrunk to 800.

    Any softmax over any subset of the items depends only on differences of exponents, and a
    difference of 800 or more already gives a weight ratio below the smallest double, so shrinking
    changes nothing to double precision, for any ``beta * gap`` (even one that overflows). It keeps
    ``|z|`` small, so that quadrature nodes ``y + z_j`` keep their precision. Shrinking moves each
    block of items between big gaps by a constant, which leaves every probability (and so its
    derivative) unchanged; ``z / beta`` is therefore a valid derivative direction with no huge
    entries that would cancel. Items with no big gap above them keep ``beta (s_j - s_max)`` exactly.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        direct = beta * (sorted_scores - sorted_scores[:, -1:])
        steps = beta * np.diff(sorted_scores, axis=1)
    big = steps > _MAX_EXPONENT_GAP
    if not big.any():
        return direct, direct / beta
    steps = np.minimum(steps, _MAX_EXPONENT_GAP)
    from_top = np.zeros_like(direct)
    from_top[:, :-1] = -np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
    below_big = np.zeros(direct.shape, dtype=bool)
    below_big[:, :-1] = np.cumsum(big[:, ::-1], axis=1)[:, ::-1] > 0
    z = np.where(below_big, from_top, direct)
    return z, z / beta


CELL_FROM, CELL_TO = -37, 5  # item i's kernel lives on cells [c_i - 37, c_i + 5) in t = log s

def union_of_cells(centres: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Start of every unit cell in the union of the items' kernel windows, per row, padded.

    Returns ``(starts, valid)``, both ``(R, K)``; padded cells have ``valid = 0``.
    """
    rows = centres.shape[0]
    candidates = (np.floor(centres)[:, :, None] + np.arange(CELL_FROM, CELL_TO)[None, None, :]).reshape(
        rows, -1
    )
    candidates.sort(axis=1)
    duplicate = np.zeros(candidates.shape, dtype=bool)
    duplicate[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    candidates[duplicate] = np.inf
    candidates.sort(axis=1)
    width = int(np.max(np.count_nonzero(np.isfinite(candidates), axis=1)))
    starts = candidates[:, :width]
    valid = np.isfinite(starts)
    return np.where(valid, starts, 0.0), valid.astype(float)
