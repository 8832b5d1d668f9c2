"""`make bench`: run every benchmark, print one table of ratios, write JSON to benchmarks/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import machine

SUITES = ["preference", "index", "encoders", "ranking", "generation", "identity", "serving", "scaleout"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    console = Console(width=160)
    info = machine()
    console.print(f"machine: {info}")
    rows = []
    for name in args.only.split(","):
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t = time.perf_counter()
        got = mod.run(quick=args.quick)
        console.print(f"[dim]{name}: {time.perf_counter() - t:.1f}s[/]")
        rows += got
    table = Table(title="RAGAR benchmarks (ratio = value vs baseline, >1 is better)")
    for c in ("bench", "metric", "value", "unit", "baseline", "baseline value", "ratio"):
        table.add_column(c, justify="left" if c in ("bench", "metric", "baseline") else "right")
    for r in rows:
        table.add_row(r.bench, r.metric, f"{r.value:.4g}", r.unit, r.baseline,
                      "" if r.baseline_value is None else f"{r.baseline_value:.4g}",
                      "" if r.ratio is None else f"{r.ratio:.2f}x")
    console.print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"machine": info, "quick": args.quick, "time": stamp, "rows": [r.to_dict() for r in rows]}
    (out / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2))
    (out / "latest.json").write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {out / 'latest.json'}")


if __name__ == "__main__":
    main()
