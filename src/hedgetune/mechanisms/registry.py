"""The registry of mechanisms: the one place that maps a name (``-m bon``) to a class.

Everything downstream (curves, HedgeTune, diagnosis, selection, the command line, figures and the
report) asks a mechanism for what it needs through the :class:`~hedgetune.mechanisms.Mechanism`
protocol, so adding a mechanism is one new file and one :func:`register` line (see
``docs/ARCHITECTURE.md`` for a worked example).
"""

from __future__ import annotations

import inspect
from typing import Any

from ._base import Mechanism

_REGISTRY: dict[str, type[Mechanism]] = {}

_REQUIRED = ("name", "display_name", "parameter", "reference_theta")


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Add a mechanism class under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Mechanism)):
        raise TypeError(f"only Mechanism subclasses can be registered, got {cls!r}")
    missing = [attr for attr in _REQUIRED if not hasattr(cls, attr)]
    if missing:
        raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")
    if not cls.name.isidentifier() or cls.name != cls.name.lower():
        raise ValueError(f"a mechanism's name must be a lower-case identifier, got {cls.name!r}")
    known = _REGISTRY.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"the name {cls.name!r} is taken by {known.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered mechanism (for plug-ins and tests)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_REGISTRY)


def lookup(name: str) -> type[Mechanism]:
    """The class registered under ``name`` (case-insensitive)."""
    if not isinstance(name, str):
        raise TypeError(f"mechanism must be one of {names()} or a Mechanism, got {type(name).__name__}")
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown mechanism {name!r}; choose one of {names()}")
    return cls


def make(mechanism: str | Mechanism, **options: Any) -> Mechanism:
    """A mechanism at its reference parameter, from a registered name and its options (``None``
    options are left at their defaults), or an instance as it is."""
    if isinstance(mechanism, Mechanism):
        given = {k: v for k, v in options.items() if v is not None}
        if given:
            raise ValueError(f"options {sorted(given)} apply to a mechanism's name, not to an instance")
        return mechanism
    cls = lookup(mechanism)
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in option_names(cls):
            users = [name for name, other in _REGISTRY.items() if option in option_names(other)]
            where = f"; it applies to {', '.join(repr(u) for u in users)}" if users else ""
            raise ValueError(f"{option} does not apply to {cls.name!r}{where}")
    return cls.template(**given)


def option_names(cls: type[Mechanism]) -> tuple[str, ...]:
    """The options a mechanism's :meth:`~Mechanism.template` takes (``("n", "on")`` for sbon)."""
    parameters = inspect.signature(cls.template).parameters.values()
    return tuple(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def servable(mechanism: Mechanism) -> None:
    """Raise ``ValueError`` (saying why) unless the hedged gateway can serve ``mechanism``: a
    sampler (not the tilted frontier), on raw proxy scores, needing no per-candidate column the
    gateway does not compute."""
    from ._set_rules import SetRule

    if not mechanism.deployable:
        raise ValueError(f"{mechanism.display_name} is a frontier, not a sampler: it cannot be served")
    if isinstance(mechanism, SetRule) and mechanism.extras():
        raise ValueError(
            f"{mechanism.display_name} needs {list(mechanism.extras())} for each candidate, which the gateway "
            "does not compute: serve bon, bop, sbon or itp"
        )
    if mechanism.options.get("on") == "quantile":
        raise ValueError("the gateway scores raw proxies: serve Soft Best-of-n with on='raw'")
