"""The hedged gateway: apply a tuned policy where responses are served (``hedgetune gateway``).

Needs the ``gateway`` extra (Starlette, uvicorn, aiohttp, httpx): ``pip install 'hedgetune[gateway]'``.
"""

from .policy import Policy, PolicyError

__all__ = ["Policy", "PolicyError"]
