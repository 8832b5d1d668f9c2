"""``ragar demo``: every step end to end on the embedded world."""

from __future__ import annotations

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
from ragar.cli.output import console
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
    _build_world_cached(cfg, world_dir)
    data_stats(world_dir, out / "data")
    summary = eval_preference(world_dir, out / "preference", config, set_)
    rows = {r["method"]: r for r in summary["rows"]}
    if "ragar" in rows:
        k = summary["k"]
        for base in ("uniform", "recency"):
            if base in rows:
                d_cos = rows["ragar"]["ideal_cos"] - rows[base]["ideal_cos"]
                d_hr = rows["ragar"][f"hr@{k}"] - rows[base][f"hr@{k}"]
                console.print(f"ragar vs {base}: ideal_cos {d_cos:+.3f}, hr@{k} {d_hr:+.3f}")
    items, rd = _ranking_data(cfg, world_dir)
    rankers = _train_and_save(cfg, world_dir, out / "rankers", items, rd)
    _evaluate_and_report(cfg, world_dir, rankers, items, rd, out / "ranker")
    _demo_generation(cfg, world_dir, out, config, set_)
    console.print(f"reports in {out}")


def _demo_generation(cfg: RagarConfig, world_dir: Path, out: Path, config, set_) -> None:
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
    generate(user=user, data=world_dir, reference=first, reference_image=None, n=d.candidates, method=None,
             out=out / "generate", **common)
    eval_generation(data=world_dir, rank_generator=None, ablation_generator=None, reader=None,
                    requests=d.generation_requests, best_of=d.best_of, out=out / "generation", **common)
    eval_clpips(data=world_dir, pairs=None, n_pairs=d.clpips_pairs, image_size=128, seed=0, out=out / "clpips")
    # the demo's replay starts afresh: a resumable job refuses another run's settings in its directory
    shutil.rmtree(out / "replay", ignore_errors=True)
    eval_replay(data=world_dir, methods="ragar,uniform,reference-only", requests=d.replay_requests, n=1, cut=0.8,
                k=10, tradeoff_scales=d.tradeoff_scales, reader=None, gallery=d.replay_gallery, out=out / "replay",
                **common)
