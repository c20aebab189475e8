"""The one bootstrap interval every score uses: a percentile interval of bootstrap replicates."""
from __future__ import annotations

from typing import Any

import numpy as np

CI_LEVEL = 0.95


def percentile_interval(replicates: Any, level: float = CI_LEVEL, axis: int = 0) -> tuple[Any, Any]:
    """Percentile-bootstrap confidence interval.

    Args:
        replicates: bootstrap replicates (numpy array or torch tensor), resamples along ``axis``.
        level: coverage, e.g. 0.95 for the 2.5th and 97.5th percentiles.
        axis: the resample axis.
    Returns:
        ``(low, high)``: floats for 1-D replicates, arrays of the remaining shape otherwise.
    """
    values = replicates.detach().cpu().numpy() if hasattr(replicates, "detach") else np.asarray(replicates)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], axis=axis)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)
