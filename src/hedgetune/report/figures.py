"""Figures (Matplotlib, headless): the reward-KL picture, the hacking curve, out-of-sample bars.

Each function draws on a new figure and returns it; :func:`save` writes PNG and SVG. They only
draw what the result objects hold: nothing is recomputed here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .._atomic import atomic_path
from ..curves import Curve
from ..mechanisms import names
from ..tune import OutOfSample, TuneResult

#: One colour per registered mechanism, in registration order (then Matplotlib's cycle).
_PALETTE = ("#1f77b4", "#2ca02c", "#d62728", "#7f7f7f", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def color_of(c: Curve) -> str:
    """A stable colour for the curve's mechanism."""
    registered = names()
    index = registered.index(c.mechanism) if c.mechanism in registered else len(registered)
    return _PALETTE[index % len(_PALETTE)]


def _label(c: Curve) -> str:
    """The legend entry: the mechanism's display name and options; a frontier says so."""
    label = c.template.short_label()
    return label if c.template.deployable else f"{label} (frontier)"


def reward_vs_kl(
    curves: Mapping[str, Curve],
    tuned: Mapping[str, TuneResult] | None = None,
    *,
    title: str = "",
    kl: str = "pool",
) -> Any:
    """True reward against KL for several mechanisms, with bands and HedgeTune's points.

    ``kl="pool"`` uses the divergence of the selection from uniform over the pool (what a finite
    pool supports); ``kl="analytic"`` the mechanisms' continuous-proxy KL.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, c in curves.items():
        x = c.kl_pool if kl == "pool" else c.kl
        color = color_of(c)
        style = "--" if not c.template.deployable else "-"
        ax.plot(
            x,
            c.true_reward,
            style,
            color=color,
            label=_label(c),
            lw=1.8,
            alpha=0.6 if c.template.options else 0.95,
        )
        if c.gain_low is not None and c.gain_high is not None:
            ref = c.reference_true_reward
            ax.fill_between(x, ref + c.gain_low, ref + c.gain_high, color=color, alpha=0.10, lw=0)
        if tuned and key in tuned:
            r = tuned[key]
            xr = r.kl_pool if kl == "pool" else r.kl
            ax.plot([xr], [r.true_reward], "o", color=color, ms=8, mec="black", zorder=5)
    if curves:
        first = next(iter(curves.values()))
        ax.axhline(first.reference_true_reward, color="black", lw=0.8, ls=":", label="reference (one sample)")
    ax.set_xlabel("KL(selection ‖ reference), nats" + (" (on the pool)" if kl == "pool" else ""))
    ax.set_ylabel("expected true reward")
    ax.set_title(title or "True reward against KL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    # A caption under the axes, where no legend or curve can cover it.
    fig.text(
        0.01,
        0.01,
        "dots: HedgeTune's choice; bands: 95% bootstrap band of the gain over the reference",
        fontsize=7,
        color="#555",
    )
    fig.tight_layout(rect=(0.0, 0.03, 1.0, 1.0))
    return fig


def hacking_curve(c: Curve, tuned: TuneResult | None = None, *, title: str = "") -> Any:
    """True reward and proxy against the parameter, with the tuned point marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.where(c.theta > 0, c.theta, np.nan)
    color = color_of(c)
    ax.plot(x, c.true_reward, color=color, lw=2, label="true reward")
    if c.gain_low is not None and c.gain_high is not None:
        ref = c.reference_true_reward
        ax.fill_between(
            x,
            ref + c.gain_low,
            ref + c.gain_high,
            color=color,
            alpha=0.15,
            lw=0,
            label="95% band of the gain over the reference",
        )
    ax.axhline(c.reference_true_reward, color="black", lw=0.8, ls=":", label="reference")
    left, right = float(np.nanmin(x)), float(np.nanmax(x))
    if tuned is not None:
        label = f"HedgeTune {c.parameter} = {tuned.theta:.3g}"
        if tuned.theta > 0:
            ax.axvline(tuned.theta, color="black", lw=1, ls="--", label=label)
        else:  # at the reference, which a log axis cannot show: in the legend only
            ax.plot([], [], color="black", lw=1, ls="--", label=label + " (the reference)")
        lo, hi = max(tuned.theta_ci[0], left), min(tuned.theta_ci[1], right)
        if hi > lo:  # the band is in the legend, and never stretches the axis
            ax.axvspan(lo, hi, color="black", alpha=0.07, label=f"95% interval of HedgeTune's {c.parameter}")
        extra = tuned.extrapolation
        if extra is not None and extra.accepted:  # past the data: a model, drawn dashed and labelled
            ax.plot(extra.theta, extra.true_reward, color=color, lw=1.5, ls="--",
                    label=f"extrapolated (Gao et al. 2022 fit): peak near {c.parameter} = {extra.peak_theta:.3g}")
            ax.axvline(tuned.supported_max, color="grey", lw=0.8, ls=":", label="largest supported by the pools")
            right = max(right, float(np.max(extra.theta)))
    ax.set_xscale("log")
    # The x range starts a decade before the true reward first moves (by 1% of its range).
    f = np.asarray(c.true_reward, dtype=float)
    span = float(np.nanmax(f) - np.nanmin(f))
    moving = np.flatnonzero((np.abs(f - f[0]) > 0.01 * span) & np.isfinite(x)) if span > 0 else np.array([], dtype=int)
    if moving.size:
        left = max(left, float(x[moving[0]]) / 10)
    ax.set_xlim(left, right * 1.05)
    ax.set_xlabel(f"{c.parameter} (log scale)")
    ax.set_ylabel("expected true reward", color=color)
    twin = ax.twinx()
    twin.plot(x, c.proxy_quantile, color="#ff7f0e", lw=1.2, ls="-.", label="proxy (within-pool quantile)")
    twin.set_ylabel("expected proxy quantile", color="#ff7f0e")
    twin.set_ylim(0.45, 1.0)
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=9, loc="best", framealpha=0.85)
    ax.set_title(
        title or f"{c.template.short_label()}: the proxy keeps rising; the true reward may not"
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def out_of_sample(results: Mapping[str, OutOfSample], *, title: str = "") -> Any:
    """Held-out true reward: reference, un-hedged, tuned, conservative, the recommended default
    and the held-out oracle."""
    keys = ["reference", "unhedged", "tuned", "conservative", "recommended", "oracle"]
    labels = [
        "reference",
        "un-hedged (top of range)",
        "HedgeTune",
        "HedgeTune (conservative)",
        "HedgeTune (recommended)",
        "held-out oracle",
    ]
    colors = ["#bbbbbb", "#ff9896", "#1f77b4", "#aec7e8", "#9467bd", "#2ca02c"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(results) + 2), 4.5))
    width = 0.8 / len(keys)
    positions = np.arange(len(results))
    tops, bottoms = [], []
    for k, (key, label, color) in enumerate(zip(keys, labels, colors, strict=True)):
        means = np.array([r.summary()[key]["mean"] for r in results.values()])
        ses = np.array([r.summary()[key]["se"] for r in results.values()])
        ax.bar(positions + (k - 2.5) * width, means, width, yerr=ses, color=color, label=label, capsize=2)
        tops.append(np.max(means + ses))
        bottoms.append(np.min(means - ses))
    ax.set_xticks(positions, list(results.keys()), fontsize=8)
    # Zoomed on the bars (the differences between policies are the point), with room above for the
    # legend; never into negative values that no bar reaches.
    low, high = min(bottoms), max(tops)
    span = (high - low) or max(abs(high), 1.0)
    floor = low - 0.5 * span
    ax.set_ylim(max(floor, 0.0) if low >= 0 else floor, high + 0.3 * span)
    ax.set_ylabel("held-out expected true reward")
    ax.set_title(title or "Out of sample: tuned on half the prompts, scored on the other half (mean ± s.e.)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def safe_name(text: str, limit: int = 100) -> str:
    """A file-name component made from data (a table or proxy name) that cannot leave its folder.

    Letters, digits, ``.``, ``_`` and ``-`` are kept; anything else becomes ``_``, leading dots are
    dropped, and the result is cut to ``limit`` characters. A name that had to change carries the
    first 8 hex digits of its SHA-256, so two different names never share a file.
    """
    cleaned = "".join(c if c in _SAFE else "_" for c in text).lstrip(".")
    if cleaned == text and cleaned and len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: limit - 9]}_{digest}" if cleaned else digest


def save(fig: Any, stem: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (a temporary file renamed into place, so a
    symbolic link already at that path is replaced, never followed); close the figure."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130, format=fmt)
        paths.append(path)
    plt.close(fig)
    return paths
