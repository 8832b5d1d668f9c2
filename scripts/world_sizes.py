"""What a world of each named size holds, and what building it costs (docs/WORLD.md's size table).

Each size is built by ``ragar world build`` in a child process; its wall time and the peak resident
memory of the largest process (the builder or one of its render workers: ``ru_maxrss``, read by
``benchmarks.harness.run_measured``) are measured from outside, and the counts are read back from
the ``world.json`` the build wrote. The worlds are built under ``OUT/scratch`` (kept for a look;
the next run replaces them).

    python scripts/world_sizes.py --out runs/results/world-sizes            # tiny, demo, large
    python scripts/world_sizes.py --sizes tiny demo --out runs/results/world-sizes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import run_measured  # noqa: E402
from ragar.config import load_config  # noqa: E402
from ragar.provenance import record_start, run_record  # noqa: E402

SIZES = ("tiny", "demo", "large")


def measure(size: str, scratch: Path, ragar: str) -> dict:
    """Build one world in a child process; its counts, wall time and peak RSS (largest process)."""
    out = scratch / size
    shutil.rmtree(out, ignore_errors=True)
    run = run_measured([ragar, "world", "build", "--size", size, "--out", str(out)])
    if run.returncode != 0:
        raise SystemExit(f"ragar world build --size {size} failed ({run.returncode}): {run.stderr[-2000:]}")
    counts = json.loads((out / "world.json").read_text())["counts"]
    return {"size": size, **counts, "seconds": round(run.seconds, 2), "peak_rss_gib": round(run.peak_rss_gib, 3)}


def main(argv: list[str] | None = None) -> None:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    ap.add_argument("--out", type=Path, default=Path("runs/results/world-sizes"))
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    ragar = str(Path(sys.executable).parent / "ragar")
    rows = []
    for size in a.sizes:
        rows.append(measure(size, a.out / "scratch", ragar))
        print(json.dumps(rows[-1]), flush=True)
    config = {size: load_config(size).world.model_dump(mode="json") for size in a.sizes}
    result = {"rows": rows, "cpu_count": os.cpu_count(),
              "provenance": {**run_record("python scripts/world_sizes.py", argv), "config": config}}
    (a.out / "world_sizes.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out / 'world_sizes.json'}")


if __name__ == "__main__":
    main()
