"""Dataset adapters: turn common layouts into a dataset directory in the contract.

Images are not copied: the ``image`` column holds an absolute path when the images live outside
the output directory (the validator and every loader resolve ``root / image``, which keeps an
absolute path as it is).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from recsys.data.io import write_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _read_any(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    if path.suffix in (".csv", ".tsv"):
        return pl.read_csv(path, separator="\t" if path.suffix == ".tsv" else ",", infer_schema_length=10000)
    raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")


def _image_index(folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return {p.stem: str(p.resolve()) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}


def _to_datetime(col: str) -> pl.Expr:
    c = pl.col(col)
    return (
        pl.when(c.cast(pl.String).str.contains(r"^\d+(\.\d+)?$"))
        .then(pl.from_epoch(c.cast(pl.String).cast(pl.Float64).cast(pl.Int64), time_unit="s"))
        .otherwise(c.cast(pl.String).str.to_datetime(strict=False))
        .cast(pl.Datetime("us"))
    )


def from_generic(interactions: str | Path, images: str | Path, out: str | Path,
                 items: str | Path | None = None) -> Path:
    """An image folder plus an interactions CSV/parquet (user_id, item_id, timestamp[, event_type,
    request_id, position]). Items come from ``items`` if given, else one per image (id = file stem)."""
    img = _image_index(images)
    inter = _read_any(interactions)
    need = {"user_id", "item_id", "timestamp"} - set(inter.columns)
    if need:
        raise ValueError(f"{interactions}: missing columns {sorted(need)}")
    inter = inter.with_columns(
        pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String),
        _to_datetime("timestamp").alias("timestamp"),
        (pl.col("event_type") if "event_type" in inter.columns else pl.lit("click")).alias("event_type"),
        (pl.col("position") if "position" in inter.columns else pl.lit(0)).cast(pl.Int32).alias("position"),
    )
    if "request_id" not in inter.columns:
        inter = inter.with_columns(pl.format("req-{}", pl.int_range(pl.len())).alias("request_id"))
    if items is not None:
        it = _read_any(items).with_columns(pl.col("item_id").cast(pl.String))
    else:
        it = pl.DataFrame({"item_id": list(img)})
    it = it.with_columns(
        (pl.col("title") if "title" in it.columns else pl.col("item_id")).alias("title"),
        (pl.col("category") if "category" in it.columns else pl.lit("unknown")).cast(pl.String).alias("category"),
        (pl.col("identity_id") if "identity_id" in it.columns else pl.col("item_id")).cast(pl.String)
        .alias("identity_id"),
        pl.col("item_id").replace_strict(img, default=None, return_dtype=pl.String).alias("image"),
        (pl.col("attributes") if "attributes" in it.columns else pl.lit("{}")).alias("attributes"),
    )
    return write_dataset(out, it, inter)


def from_movielens(root: str | Path, out: str | Path, posters: str | Path | None = None,
                   like_threshold: float = 4.0) -> Path:
    """MovieLens layout: ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``
    (movieId,title,genres) and a poster folder keyed by movieId (default ``root/posters``).

    Ratings >= ``like_threshold`` become ``like`` events, others ``rating`` (kept as the
    ``rating`` column); movies without a poster, and their ratings, are dropped.
    """
    root = Path(root)
    img = _image_index(posters or root / "posters")
    movies = pl.read_csv(root / "movies.csv").with_columns(pl.col("movieId").cast(pl.String).alias("item_id"))
    items = movies.with_columns(
        pl.col("genres").str.split("|").list.first().alias("category"),
        pl.col("item_id").alias("identity_id"),
        pl.col("item_id").replace_strict(img, default=None, return_dtype=pl.String).alias("image"),
        pl.struct(genres=pl.col("genres")).struct.json_encode().alias("attributes"),
    ).filter(pl.col("image").is_not_null())
    ratings = pl.read_csv(root / "ratings.csv")
    inter = ratings.with_columns(
        pl.col("userId").cast(pl.String).alias("user_id"),
        pl.col("movieId").cast(pl.String).alias("item_id"),
        pl.from_epoch("timestamp", time_unit="s").cast(pl.Datetime("us")).alias("timestamp"),
        pl.when(pl.col("rating") >= like_threshold).then(pl.lit("like")).otherwise(pl.lit("rating"))
        .alias("event_type"),
        pl.format("ml-{}-{}", "userId", "timestamp").alias("request_id"),
        pl.lit(0, pl.Int32).alias("position"),
    ).join(items.select("item_id"), on="item_id", how="semi")
    return write_dataset(out, items, inter.select(
        "user_id", "item_id", "timestamp", "event_type", "request_id", "position", "rating"))


def from_pigeon(samples: str | Path, out: str | Path, start: datetime = datetime(2024, 1, 1)) -> Path:
    """Pigeon benchmark layout: a JSON list or JSON-lines file of samples
    ``{"user_id", "history": [image paths], "target": image path}`` (five history items in the
    benchmark; any length is accepted). Image paths are relative to the file's folder or absolute;
    the item id is the path without suffix, the category the parent folder. The history becomes
    clicks in order and the target the last click of its sample, so leave-last-out recovers it.
    """
    samples = Path(samples)
    text = samples.read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()]
    base = samples.parent
    rows, items = [], {}
    t = start
    for k, rec in enumerate(records):
        for key in ("user_id", "history", "target"):
            if key not in rec:
                raise ValueError(f"{samples}: sample {k} lacks {key!r}")
        seq = [*rec["history"], rec["target"]]
        for pos, rel in enumerate(seq):
            p = Path(rel) if Path(rel).is_absolute() else (base / rel)
            item_id = str(Path(rel).with_suffix(""))
            items.setdefault(item_id, {"item_id": item_id, "title": Path(rel).stem,
                                       "category": Path(rel).parent.name or "unknown",
                                       "identity_id": item_id, "image": str(p.resolve()),
                                       "attributes": "{}"})
            t += timedelta(seconds=1)
            rows.append({"user_id": str(rec["user_id"]), "item_id": item_id, "timestamp": t,
                         "event_type": "click", "request_id": f"pigeon-{k}-{pos}",
                         "position": 0, "is_target": pos == len(seq) - 1})
    inter = pl.DataFrame(rows).with_columns(pl.col("timestamp").cast(pl.Datetime("us")))
    return write_dataset(out, pl.DataFrame(list(items.values())), inter)
