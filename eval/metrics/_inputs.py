"""Validation every embedding metric shares: finite values, the expected rank, unit rows."""

from __future__ import annotations

import torch


def unit_rows(x, what: str, ndim: int | None = None, nonempty: bool = False) -> torch.Tensor:
    """``x`` as float32 with unit-norm last-dim rows; a clear error names ``what`` when it has the
    wrong rank, no rows (``nonempty``), or a NaN / inf."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if ndim is not None and (x.ndim != ndim or (nonempty and len(x) == 0)):
        shape = "a non-empty (N, D) array" if nonempty else "(N, D)" if ndim == 2 else f"{ndim}-d"
        raise ValueError(f"{what} must be {shape}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    return torch.nn.functional.normalize(x, dim=-1)
