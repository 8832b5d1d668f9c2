"""Offline batch generation: one reference rendered for many users, sharded by user id.

``ragar generate-batch`` is what a campaign needs ("render this product for every user", or a
file of (user, reference) rows): the same :class:`~ragar.generation.personalize.Personalizer`
the API uses, run over units of users (:mod:`ragar.distributed`), so the job runs on one process
or many under ``accelerate launch``, resumes after a crash, and merges to the same rows either way.

Each row's seed is :func:`~ragar.distributed.stable_seed` of (seed, user, reference): the image a
user gets does not depend on the batch, the unit or the process that made it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ragar.distributed import Processes, ShardedJob, assign_units, stable_seed, units_for
from ragar.generation.personalize import Personalizer

#: the columns of every shard and of ``merged.parquet``
RESULT_COLUMNS = ("user_id", "reference_item_id", "method", "seed", "unit", "image", "preference_fit", "identity",
                  "selection", "fallback", "cold_start_ranker")


def batch_requests(users: str | Path, known_users: list[str], catalog: set[str], reference: str | None = None
                   ) -> pl.DataFrame:
    """The (user_id, reference_item_id) rows of a job, deduplicated and sorted.

    ``users`` is ``"all"`` (every user in the log) or a CSV / parquet / text file with a
    ``user_id`` column (a text file: one id a line) and, unless ``reference`` is given, a
    ``reference_item_id`` column. Unknown users are kept (they get the cold-start fallback, said
    per row); unknown reference items are an error before any work starts."""
    if str(users) == "all":
        df = pl.DataFrame({"user_id": sorted(known_users)}, schema={"user_id": pl.Utf8})
    else:
        path = Path(users)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such users file (give a file or 'all')")
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
        elif path.suffix == ".csv":
            df = pl.read_csv(path, infer_schema_length=0)  # ids stay strings
        else:
            ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            df = pl.DataFrame({"user_id": ids}, schema={"user_id": pl.Utf8})
        if "user_id" not in df.columns:
            raise ValueError(f"{path}: no user_id column (columns: {', '.join(df.columns)})")
    if reference is not None:
        df = df.with_columns(pl.lit(reference).alias("reference_item_id"))
    elif "reference_item_id" not in df.columns:
        raise ValueError(f"{users}: no reference_item_id column; give --reference ITEM_ID for every user")
    df = df.select(pl.col("user_id").cast(pl.Utf8), pl.col("reference_item_id").cast(pl.Utf8))
    if df["user_id"].null_count() or df["reference_item_id"].null_count():
        raise ValueError(f"{users}: empty user_id or reference_item_id in "
                         f"{df['user_id'].null_count() + df['reference_item_id'].null_count()} rows")
    if df.height == 0:
        raise ValueError(f"{users}: no users to generate for")
    unknown = sorted(set(df["reference_item_id"].unique().to_list()) - catalog)
    if unknown:
        raise KeyError(f"unknown reference items: {', '.join(unknown[:5])}"
                       + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    return df.unique().sort("user_id", "reference_item_id")


def image_name(user_id: str, reference_item_id: str) -> str:
    """A file name for any user id (ids may hold characters no file system likes)."""
    return hashlib.sha1(f"{user_id}\0{reference_item_id}".encode()).hexdigest()[:20] + ".png"


def run_generate_batch(p: Personalizer, requests: pl.DataFrame, out: str | Path, *, method: str, n: int,
                       seed: int = 0, batch: int = 16, unit_size: int = 64, procs: Processes | None = None,
                       context: dict | None = None, progress: bool = True) -> pl.DataFrame | None:
    """Generate this process's units; returns the merged table if this process finished the job
    (the last one to finish merges), else None. ``context`` (data, generator, ...) joins the
    settings a rerun into the same directory must match."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ragar.generation.pipeline import weights_fingerprint

    out = Path(out)
    requests = requests.with_columns(pl.Series("unit", assign_units(requests["user_id"].to_list(), unit_size)))
    units = units_for(requests.height, unit_size)
    settings = {"requests": requests.height, "requests_sha256": _frame_digest(requests), "method": method, "n": n,
                "seed": seed, "batch": batch, "unit_size": unit_size, "units": units,
                "generator_sha256": weights_fingerprint(p.pipeline), **(context or {})}
    job = ShardedJob(out, settings, [("gen", u) for u in sorted(requests["unit"].unique().to_list())], procs)
    todo = list(job.mine())
    procs = job.procs
    started, rows_done = time.time(), 0
    for _, u in tqdm(todo, desc=f"generate-batch [{procs.index + 1}/{procs.count}]", disable=not progress,
                     position=procs.index):
        rows = requests.filter(pl.col("unit") == u)
        folder = out / "images" / f"{u:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        for lo in range(0, rows.height, batch):
            part = rows[lo:lo + batch]
            seeds = [stable_seed(seed, a, b) for a, b in zip(part["user_id"], part["reference_item_id"], strict=True)]
            res = p(part["user_id"].to_list(), part["reference_item_id"].to_list(), n=n, method=method, seed=seeds)
            names = []
            for r in res:
                name = image_name(r.user_id, r.reference_item_id)
                Image.fromarray(r.best.image).save(folder / name)
                names.append(f"images/{u:05d}/{name}")
            parts.append(pl.DataFrame({
                "user_id": part["user_id"], "reference_item_id": part["reference_item_id"],
                "method": [method] * part.height, "seed": np.asarray(seeds, np.int64), "unit": part["unit"],
                "image": names, "preference_fit": [r.best.preference_fit for r in res],
                "identity": [r.best.identity for r in res], "selection": [r.best.selection for r in res],
                "fallback": [r.fallback for r in res], "cold_start_ranker": [r.cold_start_ranker for r in res]},
                schema_overrides={"fallback": pl.Utf8}))
        job.write("gen", u, pl.concat(parts))  # last: the unit counts as done only with all its images
        rows_done += rows.height
    # this process's generation window (wall clock, so windows of several processes line up): the
    # throughput of the job without start-up (loading the log, the catalog and the models)
    (out / "timing").mkdir(exist_ok=True)
    (out / "timing" / f"process-{procs.index}.json").write_text(json.dumps(
        {"process": procs.index, "processes": procs.count, "units": len(todo), "rows": rows_done, "start": started,
         "end": time.time(), "torch_threads": torch.get_num_threads()}))
    if job.pending():
        return None
    return job.merge(["user_id", "reference_item_id"])


def _frame_digest(df: pl.DataFrame) -> str:
    """Same rows, same digest: a rerun with another users file into the same directory is refused."""
    h = hashlib.sha256()
    for a, b in zip(df["user_id"], df["reference_item_id"], strict=True):
        h.update(f"{a}\0{b}\n".encode())
    return h.hexdigest()
