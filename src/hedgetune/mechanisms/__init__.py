"""The inference-time mechanisms as exact mathematics and as selection rules.

Each mechanism is an immutable object with the density of the selected response's proxy quantile
(``pdf``, ``logpdf``, ``cdf``, ``score``, ``cdf_dtheta``), its summaries (``kl``, ``mean``,
``expected_samples``), a simulator (``sample_quantiles``) and the rule applied at inference time
(``draw_n``, ``select``).
"""

from ._base import Mechanism
from .best_of_n import BestOfN
from .best_of_poisson import BestOfPoisson
from .soft_best_of_n import SoftBestOfN
from .tilted import Tilted

MECHANISMS: dict[str, type[Mechanism]] = {
    cls.name: cls for cls in (BestOfN, SoftBestOfN, BestOfPoisson, Tilted)
}

__all__ = ["MECHANISMS", "BestOfN", "BestOfPoisson", "Mechanism", "SoftBestOfN", "Tilted"]
