"""`make bench`: run every benchmark, print one table of ratios, write JSON to benchmarks/results/.

Besides the whole run (``bench-<time>.json``, ``latest.json``), a full-size run writes one
``<suite>.json`` per suite, with the machine and where it came from (command, commit, date):
docs/BENCHMARKS.md renders its tables from those (``eval/results_renderers.py``), so a bench number
in the docs is always the last measured one, and ``make results`` reruns them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import machine
from ragar.provenance import record_start, run_record

SUITES = ["preference", "index", "encoders", "ranking", "generation", "identity", "serving", "scaleout"]


def write_suite(out: Path, name: str, rows: list, info: dict) -> Path:
    """``out/<name>.json``: one suite's rows, the machine, and the command that reruns it."""
    path = out / f"{name}.json"
    payload = {"suite": name, "machine": info, "time": time.strftime("%Y%m%d-%H%M%S"),
               "provenance": run_record("python -m benchmarks.run", ["--only", name]),
               "rows": [r.to_dict() for r in rows]}
    path.write_text(json.dumps(payload, indent=2))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    record_start()
    console = Console(width=160)
    info = machine()
    console.print(f"machine: {info}")
    rows = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t = time.perf_counter()
        got = mod.run(quick=args.quick)
        console.print(f"[dim]{name}: {time.perf_counter() - t:.1f}s[/]")
        rows += got
        if not args.quick:  # a smoke run never replaces a documented measurement
            write_suite(out, name, got, info)
    table = Table(title="RAGAR benchmarks (ratio = value vs baseline, >1 is better)")
    for c in ("bench", "metric", "value", "unit", "baseline", "baseline value", "ratio"):
        table.add_column(c, justify="left" if c in ("bench", "metric", "baseline") else "right")
    for r in rows:
        table.add_row(r.bench, r.metric, f"{r.value:.4g}", r.unit, r.baseline,
                      "" if r.baseline_value is None else f"{r.baseline_value:.4g}",
                      "" if r.ratio is None else f"{r.ratio:.2f}x")
    console.print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"machine": info, "quick": args.quick, "time": stamp, "rows": [r.to_dict() for r in rows]}
    (out / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2))
    (out / "latest.json").write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {out / 'latest.json'}")


if __name__ == "__main__":
    main()
