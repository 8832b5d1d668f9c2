"""``ragar world`` and ``ragar data``: build the embedded world, validate and summarise a dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from eval.pages import data_stats_page
from ragar.cli.apps import data_app, world_app
from ragar.cli.common import (
    ConfigOpt,
    SetOpt,
    get_config,
)
from ragar.cli.output import console, err, fail, print_table
from ragar.config import RagarConfig


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    size: Annotated[str, typer.Option(help="tiny | demo | large (a named config)")] = "demo",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: bool = False,
) -> None:
    """Generate the synthetic world (catalog, renders, distractors, users, logs, oracle)."""
    from recsys.world.build import build_world

    cfg = get_config(config or size, set_)
    t0 = time.perf_counter()
    manifest = build_world(cfg.world, out, progress=not quiet)
    seconds = time.perf_counter() - t0
    rows = [{"what": k, "count": v} for k, v in manifest["counts"].items()]
    print_table([*rows, {"what": "seconds", "count": round(seconds, 2)}], f"world {out}")


def _build_world_cached(cfg: RagarConfig, out: Path) -> dict:
    """Reuse a world whose manifest was built from the same world config."""
    from recsys.world.build import build_world

    manifest_path = out / "world.json"
    want = json.loads(cfg.world.model_dump_json())
    if manifest_path.exists():
        have = json.loads(manifest_path.read_text())
        if have.get("config") == want:
            console.print(f"world at {out} is up to date (same config); reusing it")
            return have
    return build_world(cfg.world, out)


@data_app.command("validate")
def data_validate(
    root: Annotated[Path, typer.Argument(help="dataset directory")],
    images: Annotated[str, typer.Option(help="check all | sample | none of the item images")] = "all",
    sample: int = 2000,
) -> None:
    """Check a dataset against the contracts; exit code 2 and one line per problem if it fails."""
    from recsys.data.validate import validate_dataset

    if images not in ("all", "sample", "none"):
        raise fail(f"--images must be all, sample or none, not {images!r}")
    if not root.is_dir():
        raise fail(f"{root} is not a directory")
    problems = validate_dataset(root, images=images, sample=sample, progress=True)
    if problems:
        for p in problems:
            err.print(f"[red]✗[/] {p}", highlight=False, soft_wrap=True)
        err.print(f"{len(problems)} problem(s) in {root}")
        raise typer.Exit(2)
    console.print(f"[green]✓[/] {root} is a valid dataset")


@data_app.command("stats")
def data_stats(
    root: Annotated[Path, typer.Argument(help="dataset directory")],
    out: Annotated[Path | None, typer.Option(help="report directory (default: ROOT/report)")] = None,
) -> None:
    """Counts and distributions: a table, stats.json and stats.html (with the contact sheet)."""
    from eval.report import write_json
    from recsys.data.stats import dataset_stats

    out = out or root / "report"
    try:
        stats = dataset_stats(root)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    hist = stats.pop("_positives_hist")
    summary = [{"stat": k, "value": v} for k, v in stats.items() if not isinstance(v, (dict, list))]
    summary += [{"stat": f"events[{k}]", "value": v} for k, v in stats["events"].items()]
    print_table(summary, f"dataset {root}")
    print_table(stats["per_category"], "per category")
    write_json(stats, out / "stats.json")
    rep = data_stats_page(root, stats, hist)
    path = rep.write(out / "stats.html")
    console.print(f"wrote {out / 'stats.json'} and {path}")
