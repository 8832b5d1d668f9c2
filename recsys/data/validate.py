"""Validation of a dataset directory against the contracts; every problem is named, none is fatal
until all are collected, so one run tells the user everything that is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from recsys.data.schema import EVENT_TYPES, FILES, SCHEMAS

#: Images larger than this are rejected (decompression bombs, or simply not product photos).
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Problem:
    table: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.table}] {self.code}: {self.message}"


class DataValidationError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _dtype_ok(actual: pl.DataType, expected: pl.DataType) -> bool:
    if isinstance(expected, pl.Datetime):
        return isinstance(actual, pl.Datetime)
    if expected == pl.Int32():
        return actual.is_integer()
    return actual == expected


def check_schema(df: pl.DataFrame, table: str) -> list[Problem]:
    problems = []
    for col, dtype in SCHEMAS[table].items():
        if col not in df.columns:
            problems.append(Problem(table, "missing-column", f"column {col!r} is missing "
                                    f"(have: {', '.join(df.columns)})"))
        elif not _dtype_ok(df.schema[col], dtype):
            problems.append(Problem(table, "wrong-dtype",
                                    f"column {col!r} has dtype {df.schema[col]}, expected {dtype}"))
        elif df[col].null_count():
            problems.append(Problem(table, "null-values",
                                    f"column {col!r} has {df[col].null_count()} null values"))
    return problems


def _duplicates(df: pl.DataFrame, table: str, key: str) -> list[Problem]:
    if key not in df.columns:
        return []
    dup = df.group_by(key).len().filter(pl.col("len") > 1)
    if dup.height:
        ex = dup[key].head(5).to_list()
        return [Problem(table, "duplicate-ids", f"{dup.height} duplicate {key} values, e.g. {ex}")]
    return []


def _dangling(inter: pl.DataFrame | None, ref: pl.DataFrame | None, key: str, code: str, fname: str
              ) -> list[Problem]:
    """Interactions whose ``key`` is missing from the referenced table."""
    if inter is None or ref is None or key not in inter.columns or key not in ref.columns:
        return []
    if inter.schema[key] != ref.schema[key]:
        return []  # reported as a wrong dtype already
    unknown = inter.join(ref.select(key), on=key, how="anti")
    if not unknown.height:
        return []
    ex = unknown[key].unique().head(5).to_list()
    return [Problem("interactions", code, f"{unknown.height} interactions point at {key.split('_')[0]}s not in "
                    f"{fname}, e.g. {ex}")]


def check_image(path: Path) -> str | None:
    """Return why ``path`` is not a usable RGB image, or None."""
    if not path.exists():
        return "file not found"
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                return f"too large ({im.width}x{im.height} > {MAX_IMAGE_PIXELS} pixels)"
            mode = im.mode
            im.verify()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if mode != "RGB":
        return f"not RGB (mode {mode})"
    return None


def validate_dataset(root: str | Path, images: str = "all", sample: int = 2000,
                     progress: bool = False) -> list[Problem]:
    """Check a dataset directory; ``images`` is 'all', 'sample' (first ``sample`` items) or 'none'."""
    root = Path(root)
    tables: dict[str, pl.DataFrame] = {}
    problems: list[Problem] = []
    for table, fname in FILES.items():
        path = root / fname
        if not path.exists():
            if table != "users":  # users are optional: derived from interactions when absent
                problems.append(Problem(table, "missing-file", f"{path} not found"))
            continue
        try:
            tables[table] = pl.read_parquet(path)
        except Exception as e:  # polars raises several types for a corrupt file
            problems.append(Problem(table, "unreadable", f"{path}: {e}"))
            continue
        problems += check_schema(tables[table], table)
    items, inter, users = tables.get("items"), tables.get("interactions"), tables.get("users")
    if items is not None:
        problems += _duplicates(items, "items", "item_id")
    if users is not None:
        problems += _duplicates(users, "users", "user_id")
    if inter is not None and "event_type" in inter.columns and inter.schema["event_type"] == pl.String:
        bad = inter.filter(~pl.col("event_type").is_in(EVENT_TYPES))["event_type"].unique().to_list()
        if bad:
            problems.append(Problem("interactions", "unknown-event-type",
                                    f"event types {bad[:5]} not in {list(EVENT_TYPES)}"))
    problems += _dangling(inter, items, "item_id", "unknown-items", "items.parquet")
    problems += _dangling(inter, users, "user_id", "unknown-users", "users.parquet")
    if items is not None and "image" in items.columns and images != "none":
        paths = items["image"].drop_nulls()
        if images == "sample":
            paths = paths.head(sample)
        bad = []
        for rel in tqdm(paths.to_list(), desc="images", disable=not progress):
            why = check_image(root / rel)
            if why:
                bad.append(f"{rel}: {why}")
        if bad:
            problems.append(Problem("items", "bad-images",
                                    f"{len(bad)} item images are unusable, e.g. " + "; ".join(bad[:5])))
    return problems
