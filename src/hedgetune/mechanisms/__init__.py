"""The inference-time mechanisms as exact mathematics and as selection rules.

Each mechanism is an immutable object with the density of the selected response's proxy quantile
(``pdf``, ``logpdf``, ``cdf``, ``score``, ``cdf_dtheta``), its summaries (``kl``, ``mean``,
``expected_samples``), a simulator (``sample_quantiles``), the rule applied at inference time
(``draw_n``, ``select``) and what a calibration pool can say about it (``default_grid``,
``supported_max``, ``deployment_probabilities``, ...). The registry maps names to classes; a new
mechanism is one new file and one line below.
"""

from ._base import Estimator, Mechanism
from ._set_rules import SetRule
from .best_of_n import BestOfN
from .best_of_poisson import POOL_TAIL_TOLERANCE, BestOfPoisson
from .pessimism import InferenceTimePessimism
from .registry import lookup, make, names, register, servable, unregister
from .regularised_bon import LengthRegularisedBoN, RegularisedBoNKL, RegularisedBoNWD
from .soft_best_of_n import SoftBestOfN
from .tilted import Tilted

register(BestOfN)
register(SoftBestOfN)
register(BestOfPoisson)
register(Tilted)
register(InferenceTimePessimism)
register(RegularisedBoNKL)
register(RegularisedBoNWD)
register(LengthRegularisedBoN)

__all__ = [
    "POOL_TAIL_TOLERANCE",
    "BestOfN",
    "BestOfPoisson",
    "Estimator",
    "InferenceTimePessimism",
    "LengthRegularisedBoN",
    "Mechanism",
    "RegularisedBoNKL",
    "RegularisedBoNWD",
    "SetRule",
    "SoftBestOfN",
    "Tilted",
    "lookup",
    "make",
    "names",
    "register",
    "servable",
    "unregister",
]
