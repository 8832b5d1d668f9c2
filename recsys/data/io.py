"""Parquet in and out for the data contracts."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.data.schema import FILES, conform


def read_csv_with(path: str | Path, columns: tuple[str, ...] | list[str], what: str = "CSV") -> pl.DataFrame:
    """Read a user-supplied CSV that must hold ``columns``; errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        df = pl.read_csv(path)
    except pl.exceptions.PolarsError as e:
        raise ValueError(f"{what} {path}: not a readable CSV ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} {path}: missing columns {missing} (need {', '.join(columns)})")
    return df


def read_table(root: str | Path, table: str) -> pl.DataFrame:
    """Read one contract table of a dataset directory (no validation: see :mod:`recsys.data.validate`)."""
    path = Path(root) / FILES[table]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a dataset directory holds {', '.join(FILES.values())}")
    return pl.read_parquet(path)


def scan_interactions(root: str | Path) -> pl.LazyFrame:
    """Interactions as a lazy frame, so large logs stream instead of loading whole."""
    return pl.scan_parquet(Path(root) / FILES["interactions"])


def write_dataset(root: str | Path, items: pl.DataFrame, interactions: pl.DataFrame,
                  users: pl.DataFrame | None = None) -> Path:
    """Write the three tables in the contract (users derived from interactions when not given)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    conform(items, "items").write_parquet(root / FILES["items"])
    inter = conform(interactions, "interactions")
    inter.write_parquet(root / FILES["interactions"])
    if users is None:
        users = inter.select("user_id").unique().sort("user_id")
    conform(users, "users").write_parquet(root / FILES["users"])
    return root
