"""Peak memory of the steps that read the large world, against its budget (docs/SCALING.md).

Each step runs as a child process; its wall time and the peak resident memory of its largest
process (``ru_maxrss`` of the child or any of its workers, read by
``benchmarks.harness.run_measured``) are measured from outside:

1. ``ragar world build --size large`` (100,000 items, 500,000 renders, 5.7M interactions);
2. ranker features for the test window's impressions (``benchmarks/large_world_features.py``, with
   a contrastive encoder trained on the demo world first, for speed);
3. ``ragar eval replay --config large --requests 200 --no-gallery`` (its first run: it embeds the
   100k catalog's images and titles).

``generate-batch`` on the large world is the scale-out bench suite's (``benchmarks/results/
scaleout.json``); the SCALING table reads both JSONs.

    python scripts/large_world_memory.py --out runs/results/large-world-memory
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import run_measured  # noqa: E402
from ragar.config import load_config  # noqa: E402
from ragar.provenance import record_start, run_record  # noqa: E402


def measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time, the largest process's peak RSS and its standard output."""
    print("$", " ".join(cmd), flush=True)
    run = run_measured(cmd, cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return {"seconds": round(run.seconds, 1), "peak_rss_gib": round(run.peak_rss_gib, 3), "stdout": run.stdout}


def main(argv: list[str] | None = None) -> None:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo/world"), help="trains the features' encoder")
    ap.add_argument("--out", type=Path, default=Path("runs/results/large-world-memory"))
    a = ap.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    world, enc = a.out / "world", a.out / "contrastive-encoder"
    shutil.rmtree(world, ignore_errors=True)
    rows = [{"step": "world build", "command": f"ragar world build --size large --out {world}",
             **measured([str(bin_dir / "ragar"), "world", "build", "--size", "large", "--out", str(world)])}]
    subprocess.run([str(bin_dir / "ragar"), "train", "encoder", "--data", str(a.demo), "--out", str(enc)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    feats = measured([sys.executable, "-m", "benchmarks.large_world_features", str(world), str(enc)])
    figures = dict(re.findall(r"^(embed s|features s|test impressions) (\d+(?:\.\d+)?)", feats["stdout"], re.M))
    rows.append({"step": "ranker features", "command": f"python -m benchmarks.large_world_features {world} {enc}",
                 **feats, "impressions": int(figures["test impressions"]),
                 "embed_s": float(figures["embed s"]), "features_s": float(figures["features s"])})
    replay = ["ragar", "eval", "replay", "--data", str(world), "--config", "large", "--requests", "200",
              "--no-gallery", "--out", str(a.out / "replay")]
    rows.append({"step": "replay", "command": " ".join(replay), **measured([str(bin_dir / replay[0]), *replay[1:]])})
    for r in rows:
        r.pop("stdout")
    out = {"rows": rows, "budget_gib": 8, "provenance": {**run_record("python scripts/large_world_memory.py", argv),
                                                         "config": load_config("large").model_dump(mode="json")}}
    (a.out / "large_world_memory.json").write_text(json.dumps(out, indent=2))  # the world stays, for a look
    print(f"wrote {a.out / 'large_world_memory.json'}")


if __name__ == "__main__":
    main()
