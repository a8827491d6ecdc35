"""Sorting pools: the one place that sorts, checked against NumPy's stable argsort."""

from __future__ import annotations

import numpy as np
import pytest

import hedgetune as ht
from hedgetune import _threads
from hedgetune.pools import _sort_rows, build_pools


def _scores(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    if kind == "continuous":
        return rng.normal(size=shape)
    if kind == "ties":  # whole numbers (+ 0.0 turns -0.0 into 0.0)
        return np.round(rng.normal(size=shape)) + 0.0
    if kind == "last bits":  # scores that differ only in their last bits: the packed keys cannot tell them apart
        return 1.0 + rng.integers(0, 4, size=shape) * np.finfo(float).eps
    if kind == "zeros and subnormals":
        return rng.choice([-0.0, 0.0, 1e-300, -1e-300, 5e-324, -5e-324], size=shape)
    return rng.choice([-1.7e308, 1.7e308, -1.0, 1.0], size=shape) * rng.random(shape)  # extremes


@pytest.mark.parametrize("m", [1, 2, 3, 7, 100, 5000])
@pytest.mark.parametrize("kind", ["continuous", "ties", "last bits", "zeros and subnormals", "extremes"])
def test_rows_sort_like_an_argsort(m: int, kind: str) -> None:
    rng = np.random.default_rng(m)
    scores = _scores(kind, (37, m), rng)
    other = rng.normal(size=scores.shape)
    order, (ranked, carried), ties = _sort_rows(scores, [other], keep_order=True)
    stable = np.argsort(scores, axis=1, kind="stable")
    assert order is not None
    np.testing.assert_array_equal(ranked, np.take_along_axis(scores, stable, axis=1))
    np.testing.assert_array_equal(np.take_along_axis(scores, order, axis=1), ranked)
    np.testing.assert_array_equal(carried, np.take_along_axis(other, order, axis=1))
    np.testing.assert_array_equal(ties, np.any(ranked[:, 1:] == ranked[:, :-1], axis=1))
    np.testing.assert_array_equal(np.sort(order, axis=1), np.broadcast_to(np.arange(m), order.shape))
    # Tied scores may come out in any order (a pool's tie groups are averaged); all else is unique.
    if kind == "continuous":
        np.testing.assert_array_equal(order, stable)


@pytest.mark.parametrize("m", [1, 2, 7, 5000])
@pytest.mark.parametrize("kind", ["continuous", "ties", "last bits", "zeros and subnormals", "extremes"])
def test_compiled_pass_sorts_what_the_numpy_route_sorts(m: int, kind: str) -> None:
    """The compiled second half (gathers and checks in one pass per row) gives the same sorted
    matrices and ties, bit for bit, including rows it must hand back for an exact sort."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(m + 1)
    scores = _scores(kind, (37, m), rng)
    other = rng.normal(size=scores.shape)
    _, numpy_route, numpy_ties = _sort_rows(scores, [other], engine="numpy")
    _, compiled, compiled_ties = _sort_rows(scores, [other], engine="compiled")
    for a, b in zip(compiled, numpy_route, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(compiled_ties, numpy_ties)


def test_rows_sort_the_same_on_one_thread_or_several(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(600, 4000)), 3)  # enough values for two threads, with ties
    threaded = _sort_rows(scores, [scores * 2], keep_order=True)
    monkeypatch.setattr(_threads, "available_cores", lambda: 1)
    single = _sort_rows(scores, [scores * 2], keep_order=True)
    for a, b in zip((threaded[0], *threaded[1], threaded[2]), (single[0], *single[1], single[2]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pools_average_true_rewards_within_ties() -> None:
    proxy = np.array([[1.0, 0.0, 1.0, 2.0], [3.0, 2.0, 1.0, 0.0]])
    true = np.array([[10.0, 0.0, 20.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    (group,) = build_pools(ht.RewardTable.from_arrays(proxy, true)).groups
    np.testing.assert_array_equal(group.proxy, [[0.0, 1.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(group.true, [[0.0, 15.0, 15.0, 5.0], [4.0, 3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(group.has_ties, [True, False])


def test_row_blocks_cover_every_row_once_even_when_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks run on a kept pool of threads; a block that itself splits rows runs its blocks
    inline instead of waiting on the pool it occupies."""
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    seen = np.zeros((100, 10), dtype=int)

    def outer(start: int, stop: int) -> None:
        def inner(a: int, b: int) -> None:
            seen[start:stop, a:b] += 1

        _threads.over_row_blocks(10, 2, inner)

    _threads.over_row_blocks(100, 2, outer)
    np.testing.assert_array_equal(seen, 1)
    with pytest.raises(ZeroDivisionError):
        _threads.over_row_blocks(100, 2, lambda a, b: 1 // 0)


def test_row_blocks_work_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child forked after the pool started inherits the pool but not its threads: it must start
    its own, not wait forever on threads that do not exist."""
    import multiprocessing

    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    _threads.over_row_blocks(100, 2, lambda a, b: None)  # the parent's pool is running
    child = multiprocessing.get_context("fork").Process(
        target=_threads.over_row_blocks, args=(100, 2, _touch_rows)
    )
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on its parent's pool")
    assert child.exitcode == 0


def _touch_rows(start: int, stop: int) -> None:
    np.zeros(stop - start).sum()
