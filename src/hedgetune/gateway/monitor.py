"""A label-free hacking monitor: how live candidates and choices compare with the calibration.

No true reward is seen at serving time, but hacking leaves traces in what is: the candidates move
away from the scores the policy was tuned on, or the chosen ones pile up at the top of the
calibrated range. Each signal, what it means and what to do:

``out_of_support`` (by reason)
    Candidates outside the calibrated support (:mod:`hedgetune.gateway.support`). A share above
    5% means the upstream, the prompts or the scorer changed since calibration: re-calibrate
    (score fresh traffic, ``hedgetune log-table``, re-tune).
``score_drift_psi``
    Population stability index of the live candidates' scores against the calibration, over
    ten calibration deciles and the last ``window`` candidates: PSI = sum (a - e) ln(a / e),
    e = 0.1 per decile. Below 0.1: stable; 0.1-0.2: moderate drift, watch; above 0.2: the
    calibration no longer describes live scores, re-calibrate before trusting the tuned parameter.
``selected_score_quantile``
    The chosen candidate's place in the calibration. The mechanism predicts its law
    (``mechanism.cdf``); many more choices above the calibration's 99th percentile than it
    predicts mean selection is reaching scores it was never tuned on.
``winner_margin``
    The chosen candidate's calibration quantile minus the best other eligible one's (0 when it
    is the best). Mostly 0 for Best-of-n; a long tail means the chosen candidates stand far above
    their pools, the typical look of a hacked proxy.
``selected_length``
    Characters of the chosen response: a drift to long answers is the classic length hack.
``duplicates``
    Candidates identical to an earlier one of the same request: the upstream ignores sampling
    settings, and you pay n times for one answer. Above 20%, check seeds and temperature.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays import FloatArray
from ..mechanisms import Mechanism

PSI_BINS = 10
PSI_ALERT, PSI_WATCH = 0.2, 0.1
OUT_OF_SUPPORT_ALERT = 0.05
DUPLICATE_ALERT = 0.2
TOP = 0.99


def psi(quantiles: FloatArray, bins: int = PSI_BINS) -> float:
    """Population stability index of calibration quantiles against the uniform law they have
    under the calibration (module docstring); NaN for no values."""
    values = np.asarray(quantiles, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    counts = np.bincount(np.minimum((values * bins).astype(int), bins - 1), minlength=bins)
    actual = np.maximum(counts / values.size, 1e-4)
    expected = 1.0 / bins
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def expected_top_share(mechanism: Mechanism | None) -> float | None:
    """The share of choices above the calibration's 99th percentile the mechanism predicts."""
    if mechanism is None:
        return None
    try:
        value = 1.0 - float(mechanism.cdf(TOP))
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None
    return value if math.isfinite(value) else None


@dataclass
class Signals:
    """The monitor's signals over some traffic; :meth:`verdicts` reads them out."""

    requests: int = 0
    candidates: int = 0
    out_of_support: dict[str, int] = field(default_factory=dict)
    psi: float = math.nan
    selected: int = 0
    selected_top: int = 0
    expected_top: float | None = None
    margin_mean: float = math.nan
    length_mean: float = math.nan
    duplicates: int = 0
    calibrated: bool = True

    @property
    def out_of_support_share(self) -> float:
        return sum(self.out_of_support.values()) / self.candidates if self.candidates else 0.0

    @property
    def top_share(self) -> float:
        return self.selected_top / self.selected if self.selected else math.nan

    def verdicts(self) -> list[str]:
        """One sentence per signal that calls for action (none: all quiet)."""
        out = []
        if not self.calibrated:
            out.append("the policy carries no calibration: support and drift cannot be checked — re-save it with "
                       "`hedgetune tune --save-policy`")
        if math.isfinite(self.psi) and self.psi > PSI_ALERT:
            out.append(f"live scores drift from calibration: PSI {self.psi:.2f} > {PSI_ALERT} — re-calibrate")
        elif math.isfinite(self.psi) and self.psi > PSI_WATCH:
            out.append(f"live scores drift moderately from calibration: PSI {self.psi:.2f} > {PSI_WATCH} — watch")
        share = self.out_of_support_share
        if share > OUT_OF_SUPPORT_ALERT:
            worst = max(self.out_of_support, key=lambda k: self.out_of_support[k])
            out.append(f"{100 * share:.0f}% of candidates outside the calibrated range (most: {worst}) — re-calibrate")
        if self.expected_top is not None and self.selected >= 20:
            se = math.sqrt(max(self.expected_top * (1 - self.expected_top), 1e-12) / self.selected)
            if self.top_share > 2 * self.expected_top + 3 * se:
                out.append(f"{100 * self.top_share:.0f}% of choices above the calibration's 99th percentile, "
                           f"{100 * self.expected_top:.1f}% expected — selection reaches scores it was not tuned on")
        if self.candidates and self.duplicates / self.candidates > DUPLICATE_ALERT:
            out.append(f"{100 * self.duplicates / self.candidates:.0f}% of candidates duplicate another of their "
                       "request — check the upstream's seeds and temperature")
        return out

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else x

        return {
            "requests": self.requests, "candidates": self.candidates, "out_of_support": dict(self.out_of_support),
            "out_of_support_share": self.out_of_support_share, "score_drift_psi": finite(self.psi),
            "selected_top_share": finite(self.top_share), "expected_top_share": finite(self.expected_top),
            "winner_margin_mean": finite(self.margin_mean), "selected_length_mean": finite(self.length_mean),
            "duplicates": self.duplicates, "verdicts": self.verdicts(),
        }


def winner_margin(quantiles: FloatArray, kept: list[int], chosen: int) -> float:
    """The chosen candidate's calibration quantile minus the best other eligible one's, floored at 0."""
    others = [quantiles[k] for k in kept if k != chosen and np.isfinite(quantiles[k])]
    if not others or not np.isfinite(quantiles[chosen]):
        return 0.0
    return max(0.0, float(quantiles[chosen] - max(others)))


class LiveMonitor:
    """The signals over live traffic, for ``/metrics`` (Prometheus text)."""

    QUANTILE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
    MARGIN_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    LENGTH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

    def __init__(self, window: int = 2000) -> None:
        self.window: collections.deque[float] = collections.deque(maxlen=window)
        self.out_of_support: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self.histograms = {
            "hedgetune_selected_score_quantile": Histogram(self.QUANTILE_BUCKETS),
            "hedgetune_winner_margin": Histogram(self.MARGIN_BUCKETS),
            "hedgetune_selected_length": Histogram(self.LENGTH_BUCKETS),
        }

    def observe(self, quantiles: FloatArray | None, reasons: list[str | None], duplicates: int,
                chosen: int | None, kept: list[int], length: int | None) -> None:
        self.out_of_support.update(r for r in reasons if r is not None)
        self.duplicates += duplicates
        if quantiles is not None:
            self.window.extend(float(q) for q in quantiles if np.isfinite(q))
            if chosen is not None and np.isfinite(quantiles[chosen]):
                self.histograms["hedgetune_selected_score_quantile"].add(float(quantiles[chosen]))
                self.histograms["hedgetune_winner_margin"].add(winner_margin(quantiles, kept, chosen))
        if length is not None:
            self.histograms["hedgetune_selected_length"].add(float(length))

    def render(self) -> list[str]:
        lines = ["# TYPE hedgetune_candidates_out_of_support_total counter"]
        for reason in sorted(self.out_of_support):
            lines.append(f'hedgetune_candidates_out_of_support_total{{reason="{reason}"}} {self.out_of_support[reason]}')
        drift = psi(np.array(self.window)) if self.window else math.nan
        lines += [
            "# TYPE hedgetune_score_drift_psi gauge",
            f"hedgetune_score_drift_psi {drift if math.isfinite(drift) else 'NaN'}",
            "# TYPE hedgetune_score_drift_window gauge",
            f"hedgetune_score_drift_window {len(self.window)}",
            "# TYPE hedgetune_duplicates_total counter",
            f"hedgetune_duplicates_total {self.duplicates}",
        ]
        for name, histogram in self.histograms.items():
            lines += histogram.render(name)
        return lines


class Histogram:
    """A Prometheus histogram: cumulative counts at each bucket's upper edge, the sum and the count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.sum, self.total = buckets, [0] * len(buckets), 0.0, 0

    def add(self, value: float) -> None:
        self.sum += value
        self.total += 1
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1

    def render(self, name: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        lines += [f'{name}_bucket{{le="{edge}"}} {count}' for edge, count in zip(self.buckets, self.counts, strict=True)]
        return [*lines, f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]


def monitor_log(folder: Any, policy: Any) -> tuple[Signals, FloatArray]:
    """The signals over a decision log (``hedgetune monitor``) against ``policy``'s calibration,
    and the live candidates' calibration quantiles (for the page's figure)."""
    from .log import read_log

    log = read_log(folder)
    columns = set(log.column_names)
    scores = np.asarray(log.column("score").to_numpy(zero_copy_only=False), dtype=float)
    responses = log.column("response").to_pylist()
    chosen = np.asarray(log.column("chosen").to_pylist(), dtype=bool)
    flags = log.column("flag").to_pylist() if "flag" in columns else [""] * len(responses)
    eligible = log.column("eligible").to_pylist() if "eligible" in columns else [True] * len(responses)
    duplicate = log.column("duplicate").to_pylist() if "duplicate" in columns else [False] * len(responses)
    ids = log.column("request_id").to_pylist()
    calibration = policy.calibration
    signals = Signals(requests=len(set(ids)), candidates=len(responses), calibrated=calibration is not None)
    signals.out_of_support = dict(collections.Counter(r for r in flags if r))
    signals.duplicates = int(sum(bool(d) for d in duplicate))
    lengths = np.array([len(r) for r in responses], dtype=float)
    signals.selected = int(chosen.sum())
    signals.length_mean = float(lengths[chosen].mean()) if chosen.any() else math.nan
    quantiles = np.full(len(responses), np.nan)
    if calibration is not None:
        quantiles = calibration.quantile(scores)
        signals.psi = psi(quantiles)
        picked = quantiles[chosen]
        signals.selected_top = int((picked[np.isfinite(picked)] > TOP).sum())
        try:
            signals.expected_top = expected_top_share(policy.mechanism_at_theta())
        except ValueError:
            signals.expected_top = None
        margins = []
        by_request: dict[str, list[int]] = collections.defaultdict(list)
        for k, request in enumerate(ids):
            by_request[request].append(k)
        for rows in by_request.values():
            kept = [k for k in rows if eligible[k]]
            winners = [k for k in rows if chosen[k]]
            if winners:
                margins.append(winner_margin(quantiles, kept, winners[0]))
        signals.margin_mean = float(np.mean(margins)) if margins else math.nan
    return signals, quantiles


def write_page(signals: Signals, quantiles: FloatArray, folder: Any) -> Any:
    """``monitor.html`` (and its figure ``monitor.png``) in ``folder``: the verdicts, the signals
    and the live candidates' calibration quantiles against the uniform law of the calibration."""
    import html
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path, atomic_write_text

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 3.6))
    finite = quantiles[np.isfinite(quantiles)]
    if finite.size:
        axes.hist(finite, bins=PSI_BINS, range=(0, 1), density=True, color="#4477aa", alpha=0.8,
                  label=f"live candidates ({finite.size})")
    axes.axhline(1.0, color="black", linestyle="--", label="calibration (uniform by construction)")
    axes.set_xlabel("place in the calibration's proxy scores (quantile)")
    axes.set_ylabel("density")
    axes.set_title(f"live vs calibration scores, PSI {signals.psi:.3f}" if math.isfinite(signals.psi) else "no calibration")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    with atomic_path(out / "monitor.png") as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    data = signals.to_dict()
    verdicts = data.pop("verdicts")
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json_value(v))}</td></tr>" for k, v in data.items())
    said = "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) or "<li>all quiet: live traffic looks like the calibration</li>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>hedgetune monitor</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "img{max-width:100%}</style></head><body><h1>hedgetune monitor</h1>"
        f"<h2>Verdict</h2><ul>{said}</ul><h2>Signals</h2><table>{rows}</table>"
        "<h2>Live vs calibration</h2><a href='monitor.png'><img src='monitor.png' alt='live vs calibration'></a>"
        "<p>Signals are defined in <code>hedgetune.gateway.monitor</code>'s documentation.</p></body></html>"
    )
    atomic_write_text(out / "monitor.html", page)
    return out / "monitor.html"


def json_value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)
