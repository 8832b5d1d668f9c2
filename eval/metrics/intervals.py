"""The one interval helper: 95% percentile bootstrap intervals over paired units (requests,
pairs, identities), with a fixed seed so a rerun reports the same interval.

Percentile bootstrap rather than ``mean +- 1.96 se``: the quantities are bounded (hit rates, cosines)
and often skewed, and paired resampling keeps the pairing that makes method differences tight.
(``scipy.stats.bootstrap`` computes the same percentile interval; the explicit draw here is kept
because every reported interval was computed with it, so the published numbers stay reproducible.)
"""

from __future__ import annotations

import numpy as np


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired units with a 95% percentile bootstrap interval."""
    d = np.asarray(a) - np.asarray(b)
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(len(d), size=(n, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def bootstrap_ci(x: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``x`` with its 95% percentile bootstrap interval."""
    x = np.asarray(x)
    return paired_bootstrap_ci(x, np.zeros_like(x), n, seed)
