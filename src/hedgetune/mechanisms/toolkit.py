"""Public building blocks for writing a mechanism (see ``docs/examples/best_of_geometric.py``):
parameter validation and the vectorised selection kernels the built-in mechanisms use."""

from ..arrays import FloatArray, IntArray
from ._base import NEGLIGIBLE_MASS
from ._numerics import check_parameter
from ._selection import (
    argmax_random_ties,
    as_pool_matrix,
    average_over_ties,
    rank_based_choice,
    sample_from_weights,
    sample_softmax,
)

__all__ = [
    "NEGLIGIBLE_MASS",
    "FloatArray",
    "IntArray",
    "argmax_random_ties",
    "as_pool_matrix",
    "average_over_ties",
    "check_parameter",
    "rank_based_choice",
    "sample_from_weights",
    "sample_softmax",
]
