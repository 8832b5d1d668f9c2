"""Each bad-data case of the contract fails validation with a message naming the problem, and the
CLI exits with code 2."""

import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from ragar.cli import app
from recsys.data.validate import validate_dataset


@pytest.fixture
def ds(tiny_world, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_world, out)
    return out


def _rewrite(path, fn):
    fn(pl.read_parquet(path)).write_parquet(path)


def codes(root):
    return {p.code for p in validate_dataset(root)}


def test_world_is_valid(tiny_world):
    assert validate_dataset(tiny_world) == []


CASES = {
    "missing-column": ("items.parquet", lambda d: d.drop("title"), "'title' is missing"),
    "wrong-dtype": ("interactions.parquet", lambda d: d.with_columns(pl.col("timestamp").cast(pl.String)),
                    "'timestamp' has dtype String"),
    "duplicate-ids": ("items.parquet", lambda d: pl.concat([d, d.head(2)]), "duplicate item_id"),
    "unknown-items": ("interactions.parquet",
                      lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("ghost"))
                                               .otherwise(pl.col("item_id")).alias("item_id")),
                      "['ghost']"),
    "unknown-users": ("users.parquet", lambda d: d.tail(d.height - 1), "not in users.parquet"),
    "unknown-event-type": ("interactions.parquet",
                           lambda d: d.with_columns(pl.lit("purchase?").alias("event_type")), "purchase?"),
    "null-values": ("items.parquet", lambda d: d.with_columns(pl.lit(None, pl.String).alias("category")),
                    "'category' has"),
}


@pytest.mark.parametrize("code", list(CASES))
def test_bad_tables(ds, code):
    fname, fn, text = CASES[code]
    _rewrite(ds / fname, fn)
    problems = validate_dataset(ds)
    assert code in {p.code for p in problems}
    assert any(text in str(p) for p in problems), [str(p) for p in problems]
    res = CliRunner().invoke(app, ["data", "validate", str(ds)])
    assert res.exit_code == 2
    assert code in res.output


@pytest.mark.parametrize("kind", ["unreadable", "not-rgb", "missing"])
def test_bad_images(ds, kind):
    rel = pl.read_parquet(ds / "items.parquet")["image"][0]
    path = ds / rel
    if kind == "unreadable":
        path.write_bytes(b"this is not a png")
        text = "unreadable"
    elif kind == "not-rgb":
        Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(path)
        text = "not RGB (mode L)"
    else:
        path.unlink()
        text = "file not found"
    problems = validate_dataset(ds)
    assert any(p.code == "bad-images" and text in p.message and rel in p.message for p in problems)


def test_missing_file_and_corrupt_parquet(ds):
    (ds / "items.parquet").unlink()
    (ds / "interactions.parquet").write_bytes(b"garbage")
    c = codes(ds)
    assert {"missing-file", "unreadable"} <= c


def test_console_script_exit_code(ds):
    _rewrite(ds / "items.parquet", lambda d: d.drop("category"))
    exe = shutil.which("ragar") or str(__import__("pathlib").Path(sys.executable).parent / "ragar")
    r = subprocess.run([exe, "data", "validate", str(ds), "--images", "none"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "'category' is missing" in r.stderr
