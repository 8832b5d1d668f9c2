"""Best-of-N: which candidate a request returns (numpy only, so the device check uses it without
the personalizer's dependencies)."""

from __future__ import annotations

import numpy as np


def select(fit: np.ndarray, identity: np.ndarray, tradeoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Selection scores (B, n) and the chosen index per row: ``tradeoff * fit + (1 - tradeoff) *
    identity`` after min-max scaling each within the request (the two live on different scales;
    scaling within the request makes the trade-off a share). NaN (no ranker) counts as 0."""
    def scaled(x: np.ndarray) -> np.ndarray:
        x = np.nan_to_num(x, nan=0.0)
        lo, hi = x.min(1, keepdims=True), x.max(1, keepdims=True)
        return np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), 0.0)

    s = tradeoff * scaled(fit) + (1 - tradeoff) * scaled(identity)
    return s, s.argmax(1)
