"""Calibrated support: where a policy was tuned, and whether a live candidate lies there.

A policy is only known to help on candidates like those of its calibration table. The policy file
therefore carries a :class:`Calibration`: quantiles of the proxy scores over every response of the
table and, when the table has a ``length`` column (characters of the response, as ``hedgetune
score --proxy length`` writes it), quantiles of response length.

Support. With ``lo``/``hi`` the calibration's minimum and maximum and ``margin`` (default 0.1), a
value is *in support* when it lies in ``[lo - margin * (hi - lo), hi + margin * (hi - lo)]``.

Each candidate gets at most one *reason* (checked in this order):

==========================  =========================================================
``empty``                   no text (or only white space)
``no_tokens``               the upstream reported log-probabilities for no token
``score_missing``           the scorer could not score it (no log-probabilities, a
                            scoring server down, a non-finite score): never invented
``score_above_support``     proxy score above the calibrated range
``score_below_support``     proxy score below it
``length_above_support``    longer than any calibrated response, beyond the margin
``length_below_support``    shorter, likewise
==========================  =========================================================

What happens to such a candidate is the serving mode (``--out-of-support``):

* ``exclude`` (default): every flagged candidate is left out of selection;
* ``clip``: degenerate and unscored candidates are left out; out-of-support scores are clipped to
  the support's edges, so they cannot win by their excess alone;
* ``allow``: only unscored candidates are left out (a score is never invented).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import FloatArray

MODES = ("exclude", "clip", "allow")
DEGENERATE = ("empty", "no_tokens")
#: Quantile levels stored in a policy (0, 0.01, ..., 1).
LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Calibration:
    """Quantiles (at :data:`LEVELS`) of the calibration's proxy scores and response lengths."""

    score_quantiles: tuple[float, ...]
    length_quantiles: tuple[float, ...] | None = None
    n_responses: int = 0
    margin: float = 0.1

    def __post_init__(self) -> None:
        for name in ("score_quantiles", "length_quantiles"):
            values = getattr(self, name)
            if values is None:
                continue
            array = np.asarray(values, dtype=float)
            if array.shape != LEVELS.shape or not np.all(np.isfinite(array)) or np.any(np.diff(array) < 0):
                raise ValueError(f"{name} must be {LEVELS.size} finite, non-decreasing numbers")
        if not 0 <= self.margin <= 10:
            raise ValueError(f"the support margin must lie in [0, 10], got {self.margin}")

    @classmethod
    def from_values(cls, scores: Any, lengths: Any = None, margin: float = 0.1) -> Calibration:
        scores = np.asarray(scores, dtype=float)
        if scores.size == 0 or not np.all(np.isfinite(scores)):
            raise ValueError("the calibration needs finite proxy scores")
        length_q = None
        if lengths is not None:
            lengths = np.asarray(lengths, dtype=float)
            if lengths.size and np.all(np.isfinite(lengths)):
                length_q = tuple(float(v) for v in np.quantile(lengths, LEVELS))
        return cls(tuple(float(v) for v in np.quantile(scores, LEVELS)), length_q, int(scores.size), margin)

    @classmethod
    def from_table(cls, table: Any, proxy: str, margin: float = 0.1) -> Calibration:
        """From a :class:`~hedgetune.RewardTable`: every response's ``proxy`` score and, when the
        table has one, its ``length`` column."""
        lengths = table.proxies.get("length")
        return cls.from_values(table.proxies[proxy], lengths, margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score_quantiles": list(self.score_quantiles),
            "length_quantiles": None if self.length_quantiles is None else list(self.length_quantiles),
            "n_responses": self.n_responses,
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        if not isinstance(data, dict) or not isinstance(data.get("score_quantiles"), list):
            raise ValueError("'calibration' must be an object with a 'score_quantiles' list")
        unknown = sorted(set(data) - {"score_quantiles", "length_quantiles", "n_responses", "margin"})
        if unknown:
            raise ValueError(f"'calibration' has unknown keys {unknown}")
        try:
            length = data.get("length_quantiles")
            return cls(
                tuple(float(v) for v in data["score_quantiles"]),
                None if length is None else tuple(float(v) for v in length),
                int(data.get("n_responses", 0)),
                float(data.get("margin", 0.1)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"'calibration' is invalid: {exc}") from None

    # ------------------------------------------------------------------ placement
    def _bounds(self, quantiles: tuple[float, ...]) -> tuple[float, float]:
        lo, hi = quantiles[0], quantiles[-1]
        span = hi - lo if hi > lo else 1e-9 * max(1.0, abs(lo))
        return lo - self.margin * span, hi + self.margin * span

    @property
    def score_bounds(self) -> tuple[float, float]:
        return self._bounds(self.score_quantiles)

    @property
    def length_bounds(self) -> tuple[float, float] | None:
        return None if self.length_quantiles is None else self._bounds(self.length_quantiles)

    def quantile(self, scores: Any) -> FloatArray:
        """Each score's place in the calibration: the share of calibration scores below it
        (linear between the stored quantiles; 0 below the minimum, 1 above the maximum; NaN stays)."""
        q = np.asarray(self.score_quantiles)
        values = np.asarray(scores, dtype=float)
        # Flat stretches (ties in the calibration) take the middle of their levels.
        low = np.interp(values, q, LEVELS, left=0.0, right=1.0)
        high = -np.interp(-values, -q[::-1], -LEVELS[::-1], left=-1.0, right=0.0)
        return np.where(np.isnan(values), np.nan, (low + high) / 2)


def reasons(
    calibration: Calibration | None,
    texts: list[str],
    token_counts: list[int | None],
    scores: FloatArray,
) -> list[str | None]:
    """The reason each candidate is flagged (module docstring), or ``None``."""
    score_bounds = None if calibration is None else calibration.score_bounds
    length_bounds = None if calibration is None else calibration.length_bounds
    out: list[str | None] = []
    for text, tokens, score in zip(texts, token_counts, scores, strict=True):
        reason = None
        if not text.strip():
            reason = "empty"
        elif tokens == 0:
            reason = "no_tokens"
        elif not np.isfinite(score):
            reason = "score_missing"
        elif score_bounds is not None and score > score_bounds[1]:
            reason = "score_above_support"
        elif score_bounds is not None and score < score_bounds[0]:
            reason = "score_below_support"
        elif length_bounds is not None and len(text) > length_bounds[1]:
            reason = "length_above_support"
        elif length_bounds is not None and len(text) < length_bounds[0]:
            reason = "length_below_support"
        out.append(reason)
    return out


def apply_mode(
    mode: str, calibration: Calibration | None, scores: FloatArray, flags: list[str | None]
) -> tuple[FloatArray, list[int]]:
    """The scores selection sees and the indices of the candidates it may choose from."""
    if mode not in MODES:
        raise ValueError(f"the out-of-support mode must be one of {MODES}, got {mode!r}")
    kept = [
        k
        for k, reason in enumerate(flags)
        if reason is None
        or (reason != "score_missing" and (mode == "allow" or (mode == "clip" and reason not in DEGENERATE)))
    ]
    used = scores.copy()
    if mode == "clip" and calibration is not None:
        lo, hi = calibration.score_bounds
        used = np.clip(used, lo, hi)
    return used, kept
