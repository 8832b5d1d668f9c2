"""``ragar embed``, ``ragar generate`` and ``ragar generate-batch``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from eval.pages import batch_page
from ragar.cli.apps import app
from ragar.cli.common import (
    ConfigOpt,
    DeviceOpt,
    GeneratorOpt,
    RankersOpt,
    SetOpt,
    _embed,
    _personalizer,
    get_config,
)
from ragar.cli.output import console, fail, print_table
from recsys.data.images import load_rgb


@app.command("embed")
def embed(
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Embed a catalog (image + title) once; cached by item id and encoder fingerprint."""
    cfg = get_config(config, set_, device)
    t0 = time.perf_counter()
    emb = _embed(cfg, data)
    rows = [{"what": "items", "value": len(emb.ids)}, {"what": "image dim", "value": emb.image.shape[1]},
            {"what": "text dim", "value": 0 if emb.text is None else emb.text.shape[1]},
            {"what": "fingerprint", "value": emb.fingerprint},
            {"what": "seconds", "value": round(time.perf_counter() - t0, 2)}]
    print_table(rows, f"embeddings of {data}")


@app.command("generate")
def generate(
    user: Annotated[str, typer.Option("--user", "-u", help="user id")],
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory (catalog and log)")],
    reference: Annotated[str | None, typer.Option("--reference", help="reference item id")] = None,
    reference_image: Annotated[Path | None, typer.Option(help="or: a reference image file")] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates (best-of-N)")] = None,
    method: Annotated[str | None, typer.Option(help="ragar | uniform | recency | reference-only")] = None,
    seed: int = 0,
    generator: GeneratorOpt = None,
    rankers: RankersOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="images, result.json and index.html")] = Path(
        "runs/generate"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Render a reference the way USER would prefer it: N candidates, scored, best-of-N chosen."""
    from PIL import Image

    from eval.report import HtmlReport, write_json
    from ragar.encoders.base import ImageInputError
    from recsys.preference import METHODS

    cfg = get_config(config, set_, device)
    if (reference is None) == (reference_image is None):
        raise fail("give exactly one of --reference ITEM_ID and --reference-image FILE")
    if method is not None and method not in METHODS:
        raise fail(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    p = _personalizer(cfg, data, generator, rankers)
    try:
        (res,) = p(user, reference, None if reference_image is None else reference_image.read_bytes(), n=n,
                   method=method, seed=seed)
    except (KeyError, ValueError, ImageInputError, OSError) as e:
        raise fail(str(e).strip("'\"")) from None
    out.mkdir(parents=True, exist_ok=True)
    for j, c in enumerate(res.candidates):
        Image.fromarray(c.image).save(out / f"candidate-{j}.png")
    rows = [{"candidate": j, "preference_fit": c.preference_fit, "identity": c.identity, "selection": c.selection,
             "chosen": "*" if j == res.chosen else ""} for j, c in enumerate(res.candidates)]
    summary = {"user_id": res.user_id, "reference_item_id": res.reference_item_id,
               "reference_source": res.reference_source, "method": res.method, "fallback": res.fallback,
               "cold_start_ranker": res.cold_start_ranker, "chosen": res.chosen, "seed": seed, "candidates": rows,
               "history": [vars(h) for h in res.history], "timings": res.timings}
    write_json(summary, out / "result.json")
    rep = HtmlReport(f"{res.user_id}: {res.reference_item_id or 'uploaded reference'} ({res.method})")
    if res.fallback:
        rep.paragraph(f"Fallback: {res.fallback}: conditioned on the reference alone.")
    ref_img = reference_image if reference is None else p.reference_images[reference]
    rep.heading("Reference").gallery([(load_rgb(ref_img), res.reference_source)], 128)
    shown = [h for h in res.history if h.weight > 0][:12] or res.history[:12]
    rep.heading(f"History ({len(res.history)} items; the {len(shown)} heaviest, with their weights)")
    rep.gallery([(load_rgb(p.reference_images[h.item_id]),
                  f"w={h.weight:.3f} cos={h.similarity:.2f} {h.event_type}") for h in shown])
    rep.heading("Candidates (outlined: chosen by best-of-N)")
    rep.gallery([(c.image, f"fit={c.preference_fit:.3f} id={c.identity:.3f}") for c in res.candidates], 128,
                highlight=res.chosen)
    rep.table(rows)
    rep.write(out / "index.html")
    print_table(rows, f"{res.user_id} / {res.reference_item_id or 'upload'} [{res.method}]"
                + (f" fallback: {res.fallback}" if res.fallback else ""))
    console.print(f"wrote {out}/index.html")


@app.command("generate-batch")
def generate_batch(
    users: Annotated[str, typer.Option(help="'all' (every user in the log) or a CSV / parquet / text file with "
                                            "user_id [and reference_item_id]")],
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory (catalog and log)")],
    reference: Annotated[str | None, typer.Option(help="the reference item for every user (else a column)")] = None,
    n: Annotated[int | None, typer.Option("--n", help="candidates per user (best-of-N)")] = None,
    method: Annotated[str | None, typer.Option(help="ragar | uniform | recency | reference-only")] = None,
    seed: int = 0,
    batch: Annotated[int, typer.Option(help="requests per generator call")] = 16,
    unit_size: Annotated[int, typer.Option(help="users per resumable unit (the unit count depends on the input "
                                                "only, never on the process count)")] = 64,
    generator: GeneratorOpt = None,
    rankers: RankersOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="shards/, images/, manifest.json, merged.parquet")] = Path(
        "runs/generate-batch"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict | None:
    """Personalize for many users: sharded by user id, resumable, one process or many.

    Runs as it is on one process, or under `accelerate launch --multi_gpu --num_processes N
    $(which ragar) generate-batch ...` (gloo on CPU, NCCL on GPUs). Rerun the same command after a
    crash: finished units are kept, the rest are redone. The last process to finish merges."""
    from eval.report import write_json
    from ragar.distributed import processes
    from ragar.generation.batch import batch_requests, run_generate_batch
    from recsys.preference import METHODS

    cfg = get_config(config, set_, device)
    method = method or cfg.generation.method
    if method not in METHODS:
        raise fail(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    n = cfg.generation.n if n is None else n
    if not 1 <= n <= cfg.generation.max_n:
        raise fail(f"--n must be between 1 and {cfg.generation.max_n} (the configured cap), got {n}")
    if batch < 1 or unit_size < 1:
        raise fail("--batch and --unit-size must be at least 1")
    procs = processes()
    p = _personalizer(cfg, data, generator, rankers)
    try:
        reqs = batch_requests(users, sorted(p.known_users), set(p.catalog.ids), reference)
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise fail(str(e).strip("'\"")) from None
    t0 = time.perf_counter()
    context = {"data": str(Path(data).resolve()), "generator": str(generator) if generator else "demo",
               "rankers": str(rankers) if rankers else None}
    try:
        merged = run_generate_batch(p, reqs, out, method=method, n=n, seed=seed, batch=batch, unit_size=unit_size,
                                    procs=procs, context=context)
    except ValueError as e:
        raise fail(str(e)) from None
    if merged is None:
        console.print(f"process {procs.index + 1}/{procs.count}: its units are done; the last process to finish "
                      "merges")
        return None
    summary = {"rows": merged.height, "users": merged["user_id"].n_unique(), "method": method, "n": n,
               "processes": procs.count, "seconds_this_process": round(time.perf_counter() - t0, 2),
               "fallbacks": {k: int(v) for k, v in merged["fallback"].value_counts().iter_rows() if k},
               "mean_preference_fit": merged["preference_fit"].fill_nan(None).mean(),  # None without rankers
               "mean_identity": merged["identity"].fill_nan(None).mean()}
    write_json(summary, out / "summary.json")
    batch_page(merged, summary, p, out).write(out / "index.html")
    print_table([{k: v for k, v in summary.items() if k != "fallbacks"}], f"generate-batch -> {out}/merged.parquet")
    console.print(f"wrote {out}/index.html")
    return summary
