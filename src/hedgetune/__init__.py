"""hedgetune: inference-time alignment that does not fall for reward hacking.

Best-of-n, Soft Best-of-n, Best-of-Poisson and the tilted frontier as exact mathematics and fast
selection rules; exact hacking curves from calibration tables; and HedgeTune, which finds the
parameter where the true reward peaks. Based on Khalaf et al., "Inference-Time Reward Hacking in
Large Language Models" (arXiv 2506.19248, NeurIPS 2025).
"""

from . import synthetic
from .curves import Curve, curve
from .decision import Decision, decide
from .diagnose import Diagnosis, diagnose
from .ensembles import EnsembleTuning, tune_ensemble, with_ensemble
from .io import from_pandas, read_table, write_table
from .mechanisms import BestOfN, BestOfPoisson, Mechanism, SoftBestOfN, Tilted
from .streaming import StreamedPools, scan_table
from .table import RewardTable, TableError
from .tune import OutOfSample, TuneResult, evaluate, tune, tune_by_group

__version__ = "0.1.0"

__all__ = [
    "BestOfN",
    "BestOfPoisson",
    "Curve",
    "Decision",
    "Diagnosis",
    "EnsembleTuning",
    "Mechanism",
    "OutOfSample",
    "RewardTable",
    "SoftBestOfN",
    "StreamedPools",
    "TableError",
    "Tilted",
    "TuneResult",
    "__version__",
    "curve",
    "decide",
    "diagnose",
    "evaluate",
    "from_pandas",
    "read_table",
    "scan_table",
    "synthetic",
    "tune",
    "tune_by_group",
    "tune_ensemble",
    "with_ensemble",
    "write_table",
]
