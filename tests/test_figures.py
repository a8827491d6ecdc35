"""Figures: what a reader must be able to see is not hidden or padded away."""

from __future__ import annotations

import numpy as np

import hedgetune as ht
from hedgetune.report import figures


def _table(shift: float, seed: int) -> ht.RewardTable:
    rng = np.random.default_rng(seed)
    proxy = rng.normal(size=(120, 16))
    return ht.RewardTable.from_arrays(proxy, shift + 0.3 * proxy + rng.normal(size=proxy.shape))


def test_reward_vs_kl_caption_sits_below_the_axes() -> None:
    """The caption used to sit inside the axes, where the legend covered it."""
    table = _table(0.0, 0)
    curves = {name: ht.curve(table, name, bootstrap=50) for name in ("bon", "bop")}
    fig = figures.reward_vs_kl(curves, {name: ht.tune(table, name, bootstrap=50) for name in curves})
    fig.canvas.draw()
    (ax,) = fig.axes
    assert not ax.texts
    (caption,) = fig.texts
    assert "HedgeTune's choice" in caption.get_text()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    assert caption.get_window_extent(renderer).y1 <= ax.get_tightbbox(renderer).y0 + 1


def test_out_of_sample_axis_shows_every_bar_and_no_empty_negative_room() -> None:
    """All-positive results: the axis never runs below 0 (it used to run down to about -0.1 with
    nothing there); negative results: the axis reaches below them."""
    positive = {"a": ht.evaluate(_table(0.3, 1), "bop", repeats=3, bootstrap=20)}
    fig = figures.out_of_sample(positive)
    low, high = fig.axes[0].get_ylim()
    result = positive["a"]
    bars = [result.summary()[key]["mean"] for key in ("reference", "unhedged", "tuned", "oracle")]
    assert 0.0 <= low < min(bars) and high > max(bars)
    close_to_zero = {"c": ht.evaluate(_table(0.05, 3), "bop", repeats=3, bootstrap=20)}
    assert figures.out_of_sample(close_to_zero).axes[0].get_ylim()[0] >= 0.0
    negative = {"b": ht.evaluate(_table(-3.0, 2), "bop", repeats=3, bootstrap=20)}
    low, _ = figures.out_of_sample(negative).axes[0].get_ylim()
    assert low < min(r.reference.mean() for r in negative.values())
