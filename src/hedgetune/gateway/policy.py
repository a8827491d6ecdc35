"""The serving policy: which mechanism, at which parameter, ranked by which proxy, from where.

``hedgetune tune TABLE -m MECH --save-policy policy.json`` writes it; the gateway loads it. The
parameter served is the tuning's safe default (``recommended_theta``); the point estimate and the
conservative parameter are kept beside it for reference. The policy also carries its calibration
(:class:`~hedgetune.gateway.support.Calibration`: quantiles of the proxy scores and response
lengths it was tuned on), so the gateway can tell a candidate unlike anything it was tuned on, and
may fix how such candidates are served (``out_of_support``, ``fallback``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from .._digest import file_digest, folder_digest
from ..mechanisms import Mechanism, make
from .support import MODES, Calibration

#: What the gateway answers when every candidate is excluded (see :mod:`hedgetune.gateway.service`).
FALLBACKS = ("reference", "error")

#: Keys a policy file must hold, and their JSON types.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "mechanism": str,
    "theta": (int, float),
    "proxy": str,
    "options": dict,
}


class PolicyError(ValueError):
    """A policy file that cannot be served: the message names the problem."""


@dataclass(frozen=True)
class Policy:
    """A mechanism at a parameter, with the proxy it ranks by and where it came from."""

    mechanism: str
    theta: float
    proxy: str
    options: dict[str, Any] = field(default_factory=dict)
    point_theta: float | None = None
    conservative_theta: float | None = None
    source: dict[str, Any] = field(default_factory=dict)
    #: For an ensemble proxy: its members, rule, k and standardisation (from the table's provenance).
    ensemble: dict[str, Any] | None = None
    #: The calibration's score and length quantiles (None: an uncalibrated, hand-written policy).
    calibration: Calibration | None = None
    #: Serving settings the gateway's flags override: ``exclude``/``clip``/``allow`` and
    #: ``reference``/``error`` (None: the gateway's defaults).
    out_of_support: str | None = None
    fallback: str | None = None

    def __post_init__(self) -> None:
        self.template()  # a policy that cannot build its mechanism is refused at once
        if self.out_of_support is not None and self.out_of_support not in MODES:
            raise PolicyError(f"out_of_support must be one of {MODES}, got {self.out_of_support!r}")
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise PolicyError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")

    def template(self) -> Mechanism:
        """The mechanism at its reference parameter (with the policy's options)."""
        try:
            return make(self.mechanism, **self.options)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"the policy's mechanism cannot be built: {exc}") from None

    def mechanism_at_theta(self) -> Mechanism:
        try:
            return self.template().with_theta(self.theta)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"the policy's theta = {self.theta!r} is invalid: {exc}") from None

    @classmethod
    def from_tune(
        cls, result: Any, table_path: str | os.PathLike[str] | None = None, table: Any = None
    ) -> Policy:
        """The policy a :class:`~hedgetune.TuneResult` recommends (``table``: the table it was tuned
        on, whose provenance holds an ensemble proxy's recipe)."""
        from .. import __version__

        source: dict[str, Any] = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "hedgetune_version": __version__,
            "estimator": result.estimator,
            "regime": result.regime,
            "recommended_rule": result.recommended_rule,
            "n_prompts": result.n_prompts,
            "verdict": result.sentence(),
            "gain": result.gain,
            "gain_ci": list(result.gain_ci),
        }
        if table_path is not None:
            source["table"] = str(table_path)
            source["table_sha256"] = folder_digest(table_path) if Path(table_path).is_dir() else file_digest(table_path)
        ensemble = None
        if table is not None and result.proxy in getattr(table, "provenance", {}):
            try:
                recipe = json.loads(table.provenance[result.proxy])
            except (ValueError, TypeError):
                recipe = None
            if isinstance(recipe, dict) and "ensemble" in recipe:
                ensemble = recipe
        return cls(
            calibration=_calibration(table, result.proxy),
            ensemble=ensemble,
            mechanism=result.mechanism,
            theta=float(result.recommended_theta),
            proxy=result.proxy,
            options=dict(result.template.options),
            point_theta=float(result.theta),
            conservative_theta=float(result.conservative_theta),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["calibration"] = None if self.calibration is None else self.calibration.to_dict()
        return data

    def public_dict(self) -> dict[str, Any]:
        """What a client may see (``/health``): no file paths, no provenance."""
        return {"mechanism": self.mechanism, "theta": self.theta, "proxy": self.proxy, "options": self.options,
                "calibrated": self.calibration is not None}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy as JSON, atomically."""
        target = Path(path)
        atomic_write_text(target, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read and check a policy file; a clear :class:`PolicyError` for anything else."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PolicyError(f"cannot read the policy {str(path)!r}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise PolicyError(f"the policy {str(path)!r} is not valid JSON") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = "the policy") -> Policy:
        if not isinstance(data, dict):
            raise PolicyError(f"{where} must be a JSON object")
        for key, types in _REQUIRED.items():
            if key not in data:
                raise PolicyError(f"{where} has no {key!r}")
            if not isinstance(data[key], types) or isinstance(data[key], bool):
                raise PolicyError(f"{where}: {key!r} has the wrong type ({type(data[key]).__name__})")
        if not np.isfinite(data["theta"]):
            raise PolicyError(f"{where}: theta must be finite")
        known = {"mechanism", "theta", "proxy", "options", "point_theta", "conservative_theta", "source", "ensemble",
                 "calibration", "out_of_support", "fallback"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"{where} has unknown keys {unknown}")
        if data.get("ensemble") is not None and not isinstance(data["ensemble"], dict):
            raise PolicyError(f"{where}: 'ensemble' must be an object")
        data = dict(data)
        if data.get("calibration") is not None:
            try:
                data["calibration"] = Calibration.from_dict(data["calibration"])
            except ValueError as exc:
                raise PolicyError(f"{where}: {exc}") from None
        policy = cls(**data)
        policy.mechanism_at_theta()
        return policy


def _calibration(table: Any, proxy: str) -> Calibration | None:
    """The calibration of ``proxy`` in ``table`` (in memory, or streamed chunk by chunk)."""
    if table is None:
        return None
    if hasattr(table, "proxies"):
        return Calibration.from_table(table, proxy)
    if hasattr(table, "chunks"):
        scores, lengths = [], []
        for _, chunk in table.chunks():
            scores.append(np.asarray(chunk.proxies[proxy]))
            if "length" in chunk.proxies:
                lengths.append(np.asarray(chunk.proxies["length"]))
        if not scores:
            return None
        return Calibration.from_values(np.concatenate(scores), np.concatenate(lengths) if lengths else None)
    return None
