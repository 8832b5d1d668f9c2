"""``ragar demo``: every step end to end on the embedded world."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ragar.cli.apps import app
from ragar.cli.common import (
    ConfigOpt,
    DeviceOpt,
    SetOpt,
    _ranking_data,
    get_config,
)
from ragar.cli.evaluate import _evaluate_and_report, eval_clpips, eval_generation, eval_preference, eval_replay
from ragar.cli.generate import generate
from ragar.cli.output import console, print_table
from ragar.cli.train import _train_and_save
from ragar.cli.world import _build_world_cached, data_stats
from ragar.config import RagarConfig


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="where the demo writes everything")] = Path("runs/demo"),
    config: ConfigOpt = "demo",
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """End to end on the embedded world: build it, summarise it, compare preference methods,
    train and evaluate the rankers, and write the reports."""
    cfg = get_config(config, set_, device)
    set_ = [*(set_ or []), *([f"runtime.device={device}"] if device else [])]  # the steps below read the config
    world_dir = out / "world"
    stages: list[dict] = []
    start = time.perf_counter()
    with _stage(stages, "world (build or reuse) and its statistics"):
        _build_world_cached(cfg, world_dir)
        data_stats(world_dir, out / "data")
    with _stage(stages, "preference methods compared"):
        summary = eval_preference(world_dir, out / "preference", config, set_)
    _print_preference_deltas(summary)
    with _stage(stages, "rankers trained"):
        items, rd = _ranking_data(cfg, world_dir)
        rankers = _train_and_save(cfg, world_dir, out / "rankers", items, rd)
    with _stage(stages, "rankers evaluated"):
        _evaluate_and_report(cfg, world_dir, rankers, items, rd, out / "ranker")
    _demo_generation(cfg, world_dir, out, config, set_, stages)
    _write_timings(stages, time.perf_counter() - start, out, cfg)
    console.print(f"reports in {out}")


@contextmanager
def _stage(stages: list[dict], name: str) -> Iterator[None]:
    """Time one step of the demo: ``make demo`` has a 10-minute budget, and the table at the end
    says which step spends it."""
    t = time.perf_counter()
    yield
    stages.append({"stage": name, "seconds": round(time.perf_counter() - t, 1)})


def _write_timings(stages: list[dict], total: float, out: Path, cfg: RagarConfig) -> None:
    """The wall time of each step, printed and written to ``timings.json`` beside the reports."""
    from eval.report import write_json
    from ragar.cli.common import provenance

    rows = [*stages, {"stage": "all of ragar demo (the steps and what runs between them)", "seconds": round(total, 1)}]
    print_table([{**r, "share": f"{r['seconds'] / total:.0%}" if total > 0 else "-"} for r in rows],
                title="demo: wall time by step")
    write_json({"stages": stages, "total_s": round(total, 1), "provenance": provenance(cfg)}, out / "timings.json")


def _print_preference_deltas(summary: dict) -> None:
    rows = {r["method"]: r for r in summary["rows"]}
    if "ragar" not in rows:
        return
    k = summary["k"]
    for base in ("uniform", "recency"):
        if base in rows:
            d_cos = rows["ragar"]["ideal_cos"] - rows[base]["ideal_cos"]
            d_hr = rows["ragar"][f"hr@{k}"] - rows[base][f"hr@{k}"]
            console.print(f"ragar vs {base}: ideal_cos {d_cos:+.3f}, hr@{k} {d_hr:+.3f}")


def _demo_generation(cfg: RagarConfig, world_dir: Path, out: Path, config, set_, stages: list[dict]) -> None:
    """The generation half of the demo, on the shipped generator (trained once; see its provenance)."""
    from ragar.generation.loading import DEMO_GENERATOR

    if not (DEMO_GENERATOR / "unet").is_dir():
        console.print(f"[yellow]no shipped generator in {DEMO_GENERATOR}: generation steps skipped[/]")
        return
    import shutil

    import polars as pl

    d = cfg.demo
    user = "u000001"

    first = pl.read_parquet(world_dir / "items.parquet")["item_id"][0]
    common = {"rankers": out / "rankers", "generator": None, "seed": 0, "config": config, "set_": set_}
    with _stage(stages, f"one generate request ({d.candidates} candidates)"):
        generate(user=user, data=world_dir, reference=first, reference_image=None, n=d.candidates, method=None,
                 out=out / "generate", **common)
    with _stage(stages, f"generation compared ({d.generation_requests} requests)"):
        eval_generation(data=world_dir, rank_generator=None, ablation_generator=None, reader=None,
                        requests=d.generation_requests, best_of=d.best_of, out=out / "generation", **common)
    with _stage(stages, f"CLPIPS ({d.clpips_pairs} pairs)"):
        eval_clpips(data=world_dir, pairs=None, n_pairs=d.clpips_pairs, image_size=128, seed=0, out=out / "clpips")
    # the demo's replay starts afresh: a resumable job refuses another run's settings in its directory
    shutil.rmtree(out / "replay", ignore_errors=True)
    with _stage(stages, f"replay ({d.replay_requests} requests, trade-off sweep)"):
        eval_replay(data=world_dir, methods="ragar,uniform,reference-only", requests=d.replay_requests, n=1,
                    cut=0.8, k=10, tradeoff_scales=d.tradeoff_scales, reader=None, gallery=d.replay_gallery,
                    out=out / "replay", **common)
