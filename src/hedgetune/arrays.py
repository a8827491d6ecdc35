"""The array types used across hedgetune's signatures."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Float64 arrays: rewards, probabilities, parameters.
FloatArray = NDArray[np.float64]
#: Index arrays: chosen candidates, counts, positions.
IntArray = NDArray[np.intp]
