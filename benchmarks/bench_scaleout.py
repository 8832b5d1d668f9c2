"""Scale-out: ``ragar generate-batch`` on the large world (100k items, 5.7M interactions) with 2
processes under ``accelerate launch`` (gloo, one thread each) against 1 process (all cores), the
same users, seeds and settings, measured in the same run; plus the peak memory of each.

Throughput is users per second over the generation window (from the first unit started to the
last one written, across processes: ``timing/process-*.json``), and end to end (with start-up:
reading the 5.7M-row log, the cached catalog embeddings and the models). The large world is read
from ``$RAGAR_LARGE_WORLD`` or ``runs/large/world``, built there when missing (about 2 minutes);
its catalog embeddings are cached on first use. ``--quick`` runs the tiny world instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from benchmarks.harness import Row, run_measured
from serving.server import free_port

BIN = Path(sys.executable).parent


def _world(quick: bool, tmp: Path) -> tuple[Path, str]:
    if quick:
        root = tmp / "tiny-world"
        subprocess.run([str(BIN / "ragar"), "world", "build", "--size", "tiny", "--out", str(root)], check=True,
                       capture_output=True)
        return root, "tiny"
    root = Path(os.environ.get("RAGAR_LARGE_WORLD", "runs/large/world"))
    if not (root / "world.json").exists():
        subprocess.run([str(BIN / "ragar"), "world", "build", "--size", "large", "--out", str(root)], check=True)
    return root, "large"


def _run(cmd: list[str], out: Path, threads: int) -> dict:
    """Wall time of the command, its generation window, and the peak RSS of its largest process.

    ``threads`` is each process's OpenMP thread count, set here rather than inherited: an
    ``OMP_NUM_THREADS=2`` left in the caller's shell gave each of two processes two threads on two
    cores, and the oversubscribed pair ran at a third of one process's speed."""
    run = run_measured(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)})
    log = Path(__file__).parent / "results" / f"scaleout-{out.name}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(run.stdout + "\n--- stderr ---\n" + run.stderr)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed (exit {run.returncode}); full output in {log}")
    timing = [json.loads(p.read_text()) for p in (out / "timing").glob("process-*.json")]
    window = max(x["end"] for x in timing) - min(x["start"] for x in timing)
    rows = pl.read_parquet(out / "merged.parquet").height
    return {"wall_s": run.seconds, "window_s": window, "rows": rows, "users_per_s": rows / window,
            "users_per_s_end_to_end": rows / run.seconds, "peak_rss_gib": run.peak_rss_gib,
            "threads": [x["torch_threads"] for x in timing]}


def _threads(n: int) -> str:
    """The label's thread count, which follows the machine's cores (the rows were "x 1 thread" literals,
    true on 2 cores only)."""
    return f"{n} thread" + ("" if n == 1 else "s")


def run(quick: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        world, config = _world(quick, tmp)
        users = pl.read_parquet(world / "users.parquet")["user_id"].sort().head(24 if quick else 192)
        (tmp / "users.txt").write_text("\n".join(users) + "\n")
        reference = pl.read_parquet(world / "items.parquet", columns=["item_id"])["item_id"][0]
        args = ["generate-batch", "--data", str(world), "--config", config, "--users", str(tmp / "users.txt"),
                "--reference", reference, "--n", "1", "--batch", "16", "--unit-size", "4" if quick else "16"]
        if quick:
            args += ["--set", "generation.num_inference_steps=5"]
        cores = max(2, os.cpu_count() or 2)
        one = _run([str(BIN / "ragar"), *args, "--out", str(tmp / "one")], tmp / "one", cores)
        two = _run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                    str(BIN / "ragar"), *args, "--out", str(tmp / "two")], tmp / "two", cores // 2)
    name = f"generate-batch ({config} world, {one['rows']} users)"
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"scaleout-{config}.json").write_text(json.dumps({"one_process": one, "two_processes": two}, indent=2))
    return [
        Row(name, f"users/s, 2 processes x {_threads(cores // 2)}", two["users_per_s"], "users/s",
            f"1 process x {_threads(cores)}", one["users_per_s"]),
        Row(name, "users/s end to end, 2 processes", two["users_per_s_end_to_end"], "users/s",
            "1 process, end to end", one["users_per_s_end_to_end"]),
        Row(name, "peak RSS of the largest process, 2 processes", two["peak_rss_gib"], "GiB", "1 process",
            one["peak_rss_gib"], higher_is_better=False),
    ]
