"""The scripts behind the design tables (scripts/world_sizes.py and friends) measure what they say."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_world_sizes_counts_what_the_build_wrote_and_records_its_config(tiny_world, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts/world_sizes.py"), "--sizes", "tiny", "--out",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads((tmp_path / "world_sizes.json").read_text())
    (row,) = d["rows"]
    built = json.loads((tmp_path / "scratch" / "tiny" / "world.json").read_text())["counts"]
    # the same named config builds the same world as the test fixture (the world is a function of it)
    assert built == json.loads((tiny_world / "world.json").read_text())["counts"]
    assert {k: row[k] for k in built} == built and row["size"] == "tiny"
    # a Python process that imported polars and numpy holds tens of MiB at least; far below the 15 GiB budget
    assert 0.05 < row["peak_rss_gib"] < 15 and row["seconds"] > 0
    p = d["provenance"]
    assert p["command"] == f"python scripts/world_sizes.py --sizes tiny --out {tmp_path}"
    assert p["config"]["tiny"]["n_users"] == row["users"] and p["date"]


def test_the_unet_speed_variants_differ_only_in_the_unet():
    sys.path.insert(0, str(ROOT))
    from benchmarks.generator_training_speed import BEFORE, SHIPPED, VARIANTS
    from ragar.config import load_config

    shipped = load_config("demo").generator
    assert {"block_out_channels": shipped.block_out_channels,
                       "cross_attention_blocks": shipped.cross_attention_blocks} == SHIPPED
    assert [v[0] for v in VARIANTS.values()] == [BEFORE, BEFORE, SHIPPED]
    assert [v[1] for v in VARIANTS.values()] == [False, True, True]
