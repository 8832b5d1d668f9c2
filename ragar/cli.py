"""The ``ragar`` command line: the composition root that wires every package together.

Every command prints its result as a table and writes it as JSON; visual results also go into an
HTML report. Errors a user can cause (bad config, bad data, unknown ids) exit with code 2 and a
message that names the problem; nothing is half-written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ragar.cli_output import console, err, fail, print_table
from ragar.config import ConfigError, RagarConfig, load_config

app = typer.Typer(help="RAGAR: recommendation-guided personalized image generation.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
world_app = typer.Typer(help="The embedded synthetic world.", no_args_is_help=True)
data_app = typer.Typer(help="Dataset validation and statistics.", no_args_is_help=True)
eval_app = typer.Typer(help="Offline evaluation.", no_args_is_help=True)
train_app = typer.Typer(help="Training.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")

from serving.cli import ab_app, eval_alignment, keys_app, serve_cmd  # noqa: E402 (the composition root wires serving in)

app.add_typer(ab_app, name="ab")
app.add_typer(keys_app, name="keys")
app.command("serve")(serve_cmd)
eval_app.command("alignment")(eval_alignment)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="named config (configs/<name>.yaml) "
                                               "or a YAML path, layered over configs/defaults.yaml")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set world.seed=3")]


DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | cuda:N (default: the "
                                               "config's runtime.device; the dtype is runtime.dtype)")]


def get_config(name: str | None, sets: list[str] | None, device: str | None = None) -> RagarConfig:
    """The layered config; ``--device`` is the last layer (``runtime.device``), checked at once, so
    a command asked for a device this machine lacks exits 2 before it loads anything."""
    try:
        cfg = load_config(name, [*(sets or []), *([f"runtime.device={device}"] if device else [])])
    except ConfigError as e:
        raise fail(str(e).replace(f"--set runtime.device={device}", f"--device {device}")) from None
    if device is not None:
        get_runtime(cfg)
    return cfg


_announced: set[str] = set()


def device_runtime(device: str | None):
    """The runtime of a command that takes no config: ``--device`` or ``auto``."""
    from ragar.runtime import RuntimeConfig

    try:
        rc = RuntimeConfig(device=device or "auto")
    except ValueError:
        raise fail(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    return get_runtime(RagarConfig(runtime=rc))


def get_runtime(cfg: RagarConfig):
    """The device and dtype the command's models run on (:mod:`ragar.runtime`)."""
    from ragar.runtime import DeviceUnavailableError, Runtime

    try:
        rt = Runtime.from_config(cfg.runtime)
    except (DeviceUnavailableError, ValueError) as e:
        raise fail(str(e)) from None
    if (d := rt.describe()) not in _announced:  # once per process, on stderr (stdout holds the tables)
        _announced.add(d)
        err.print(f"runtime: {d}" + (" (runtime.device=auto)" if cfg.runtime.device == "auto" else ""),
                  highlight=False)
    return rt


# --- world ------------------------------------------------------------------------------------

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


# --- data ---------------------------------------------------------------------------------------

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
    rep = _stats_report(root, stats, hist)
    path = rep.write(out / "stats.html")
    console.print(f"wrote {out / 'stats.json'} and {path}")


def _stats_report(root: Path, stats: dict, hist: list[int]):
    import matplotlib.pyplot as plt

    from eval.report import HtmlReport

    rep = HtmlReport(f"Dataset statistics: {root}")
    rep.table([{"stat": k, "value": v} for k, v in stats.items() if not isinstance(v, (dict, list))])
    rep.table(stats["per_category"], "per category")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    cats = [r["category"] for r in stats["per_category"]]
    axes[0].bar(cats, [r["positives"] for r in stats["per_category"]], color="#4a7")
    axes[0].set_title("positive events per category")
    axes[0].tick_params(axis="x", rotation=45)
    axes[1].hist(hist, bins=40, color="#47a")
    axes[1].set_title("positive events per user")
    rep.figure(fig, "Per-category and per-user distributions")
    if (root / "views.parquet").exists():
        from recsys.world.contact_sheet import contact_sheet

        sheet = contact_sheet(root)
        rep.heading("Contact sheet")
        rep.image(sheet, "Each row: an item's views, then each near-identity distractor (red) beside the "
                  "view it copies: one part changed, same style, pose and background.")
    return rep


# --- embeddings and preference -------------------------------------------------------------

def _encoders(cfg: RagarConfig):
    from ragar.encoders.registry import build_image_encoder, build_text_encoder

    try:
        rt = get_runtime(cfg)
        return (build_image_encoder(cfg.encoder.image, cfg.encoder.image_size, rt),
                build_text_encoder(cfg.encoder.text, rt))
    except (ValueError, FileNotFoundError, OSError) as e:
        raise fail(f"cannot load encoders: {e}") from None


def _embed(cfg: RagarConfig, data: Path, progress: bool = True):
    from ragar.encoders.catalog import embed_catalog

    if not (data / "items.parquet").exists():
        raise fail(f"{data} has no items.parquet: not a dataset directory")
    img, txt = _encoders(cfg)
    return embed_catalog(data, img, txt, batch_size=cfg.encoder.batch_size, progress=progress)


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


@eval_app.command("preference")
def eval_preference(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (needs the oracle)")],
    out: Annotated[Path | None, typer.Option(help="report directory (default: DATA/report)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Compare preference methods on the same (user, reference) pairs against the oracle."""
    from eval.report import write_json
    from recsys.preference import METHODS
    from recsys.preference_eval import evaluate_preference
    from recsys.world.oracle import World

    cfg = get_config(config, set_, device)
    unknown = [m for m in cfg.eval_preference.methods if m not in METHODS]
    if unknown:
        raise fail(f"unknown preference methods {unknown}; known: {list(METHODS)}")
    try:
        world = World(data)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    emb = _embed(cfg, data)
    vectors = emb.combined(cfg.encoder.text_weight)
    res = evaluate_preference(world, emb.ids, vectors, cfg.eval_preference.methods, cfg.preference,
                              k=cfg.eval_preference.k, max_pairs=cfg.eval_preference.max_pairs,
                              seed=cfg.world.seed)
    out = out or data / "report"
    print_table(res["rows"], "preference methods (same pairs)")
    summary = {"rows": res["rows"], "encoder": emb.fingerprint, "text_weight": cfg.encoder.text_weight,
               "preference": cfg.preference.model_dump(), "k": res["k"]}
    write_json(summary, out / "preference.json")
    path = _preference_report(world, emb.ids, res, cfg).write(out / "preference.html")
    console.print(f"wrote {out / 'preference.json'} and {path}")
    return summary


def _preference_report(world, ids, res: dict, cfg: RagarConfig):
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image, ImageDraw

    from eval.report import HtmlReport

    k = res["k"]
    rep = HtmlReport("Preference methods on the world")
    rep.paragraph(f"Same (user, reference) pairs for every method; reference = another item of the held-out "
                  f"item's category. ideal_cos: cosine to the oracle's ideal items; hr@{k}: the held-out item "
                  f"in the top {k} when the preference embedding queries the catalog (history excluded).")
    rep.table(res["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    names = [r["method"] for r in res["rows"]]
    for ax, key in zip(axes, ["ideal_cos", f"hr@{k}"], strict=True):
        ax.bar(names, [r[key] for r in res["rows"]], yerr=[r[f"{key}_ci95"] for r in res["rows"]],
               capsize=4, color=["#c33", "#888", "#aaa", "#47a"][: len(names)])
        ax.set_title(f"{key} (95% CI)")
    rep.figure(fig, "Means with 95% confidence intervals over pairs")
    # one worked example: the reference, then the history sorted by RAGAR weight
    pairs, ex = res["pairs"], res["example"]
    h = pairs.history
    i = int(np.argmax(h.lengths()))
    order = np.argsort(-ex["weights"][i])[: min(12, int(h.lengths()[i]))]
    paths = dict(zip(world.items["item_id"], world.items["image"], strict=True))
    cell = 72
    sheet = Image.new("RGB", ((len(order) + 1) * (cell + 6) + 6, cell + 40), "white")
    d = ImageDraw.Draw(sheet)
    ref_id = ids[pairs.reference_pos[i]]
    sheet.paste(Image.open(world.root / paths[ref_id]).convert("RGB").resize((cell, cell)), (6, 6))
    d.text((6, cell + 10), "reference", fill=(0, 0, 200))
    for j, slot in enumerate(order):
        item = h.item_ids[i][slot]
        x = 6 + (j + 1) * (cell + 6)
        sheet.paste(Image.open(world.root / paths[item]).convert("RGB").resize((cell, cell)), (x, 6))
        d.text((x, cell + 10), f"w={ex['weights'][i][slot]:.2f}", fill=(0, 0, 0))
        d.text((x, cell + 24), f"s={ex['similarity'][i][slot]:.2f}", fill=(90, 90, 90))
    rep.heading("Example: the weights of one user's history")
    rep.image(sheet, f"user {pairs.user_ids[i]}, reference {ref_id}: history items by RAGAR weight w "
              f"(s = cosine to the reference); {int(h.lengths()[i])} items in the history")
    return rep


# --- ranking ------------------------------------------------------------------------------------

def _item_table(cfg: RagarConfig, data: Path):
    import polars as pl

    from ragar.generation.loading import item_table

    return item_table(pl.read_parquet(data / "items.parquet"), _embed(cfg, data), cfg.encoder.text_weight)


def _ranking_data(cfg: RagarConfig, data: Path):
    from recsys.data.io import scan_interactions
    from recsys.ranking.pipeline import prepare

    items = _item_table(cfg, data)
    r = cfg.ranker
    rd = prepare(scan_interactions(data), items, cfg.preference, cut=r.cut, valid_share=r.valid_share,
                 hr_queries=r.hr_queries, hr_negatives=r.hr_negatives, seed=r.seed, max_train=r.max_train,
                 progress=True)
    return items, rd


@train_app.command("ranker")
def train_ranker(
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the rankers are saved")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Train LightGBM LambdaRank and the torch ranker (each with its uniform-history variant)."""

    cfg = get_config(config, set_, device)
    if not (data / "interactions.parquet").exists():
        raise fail(f"{data} has no interactions.parquet: not a dataset directory")
    t0 = time.perf_counter()
    items, rd = _ranking_data(cfg, data)
    rankers = _train_and_save(cfg, data, out, items, rd)
    if rankers is None:  # another process of an `accelerate launch` run: the main one saves and reports
        return
    (out / "ranker_config.json").write_text(json.dumps({"config": json.loads(cfg.model_dump_json()),
                                                        "data": str(data), "encoder": cfg.encoder.image}, indent=2))
    rows = [{"model": f"lightgbm-{k}", "best_iteration": m.best_iteration} for k, m in rankers.lgbm.items()]
    rows += [{"model": f"din-{k}", "best_iteration": f"loss {losses[0]:.4f} -> {losses[-1]:.4f}"}
             for k, losses in rankers.din_losses.items()]
    print_table(rows, f"rankers saved to {out} in {time.perf_counter() - t0:.0f}s")


@train_app.command("encoder")
def train_encoder(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (views.parquet)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the encoder is saved")],
    steps: int = 400,
    batch_size: int = 64,
    seed: int = 0,
    device: DeviceOpt = None,
) -> None:
    """Train the small contrastive image encoder on the world; use it with
    `--set encoder.image=contrastive:OUT`."""
    from ragar.encoders.contrastive import train_contrastive_encoder

    if not (data / "views.parquet").exists():
        raise fail(f"{data} has no views.parquet: contrastive training needs a world directory")
    t0 = time.perf_counter()
    losses = train_contrastive_encoder(data, out, steps=steps, batch_size=batch_size, seed=seed,
                                       device=device_runtime(device).device)
    print_table([{"steps": steps, "first loss": sum(losses[:10]) / min(10, len(losses)),
                  "final loss": sum(losses[-10:]) / min(10, len(losses)),
                  "seconds": round(time.perf_counter() - t0, 1)}], f"encoder saved to {out}")


@train_app.command("generator")
def train_generator_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoints, samples and the final weights")],
    steps: Annotated[int | None, typer.Option(help="override generator.steps")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="use at most this many training pairs")] = None,
    rank_task: Annotated[bool, typer.Option(
        "--rank-task/--no-rank-task", help="add the ranking loss of the frozen ranker (needs --rankers)")] = False,
    init: Annotated[Path | None, typer.Option(help="fine-tune from this trained generator")] = None,
    rankers: Annotated[Path | None, typer.Option(help="trained rankers (for --rank-task)")] = None,
    no_resume: bool = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Train the embedded pixel-space generator (resumes from the latest checkpoint in OUT).

    The rank task and its ablation: `--init BASE --rank-task` and `--init BASE` fine-tune the same
    weights for the same steps, with and without the ranking loss."""
    from ragar.generation.train import make_pairs, train_generator

    extra = [*([f"generator.steps={steps}"] if steps else []), *(["generator.rank_task=true"] if rank_task else []),
             *([f"generator.init_from={init}"] if init else [])]
    cfg = get_config(config, [*(set_ or []), *extra], device)
    if not (data / "views.parquet").exists():
        raise fail(f"{data} is not a world directory (no views.parquet)")
    if cfg.generator.rank_task and rankers is None:
        raise fail("--rank-task needs --rankers DIR (a trained torch ranker scores the generated images)")
    if init is not None and not (init / "unet").is_dir():
        raise fail(f"--init {init}: not a trained generator (no unet/)")
    emb = _embed(cfg, data)
    try:
        pairs = make_pairs(data, emb.ids, emb.combined(cfg.encoder.text_weight), cfg.generator.image_size,
                           cfg.preference, max_pairs=max_pairs, seed=cfg.generator.seed,
                           style_pairs=cfg.generator.style_pairs, style_columns=cfg.generator.style_columns)
    except ValueError as e:
        raise fail(str(e)) from None
    task = _rank_task(cfg, data, rankers, emb, pairs) if cfg.generator.rank_task else None
    prov = {"command": ctx.command_path, "params": {k: str(v) for k, v in ctx.params.items()}, "data": str(data),
            "world_seed": cfg.world.seed, "encoder": emb.fingerprint}
    try:
        s = train_generator(pairs, out, cfg.generator, resume=not no_resume, provenance=prov, rank_task=task,
                            device=get_runtime(cfg).device)
    except ValueError as e:
        raise fail(str(e)) from None
    if "pairs" not in s:  # another process of an `accelerate launch` run: the main one saves and reports
        return
    print_table([{"pairs": s["pairs"], "steps": s["steps"], "resumed from": s["resumed_from"],
                  "first loss": s["first_loss"], "final loss": s["final_loss"],
                  "seconds": round(s["seconds_this_run"], 1)}], f"generator saved to {out}")


def _rank_task(cfg: RagarConfig, data: Path, rankers: Path, emb, pairs):
    import polars as pl

    from ragar.generation.loading import item_table
    from ragar.generation.rank_task import RankTask
    from recsys.data.io import read_table
    from recsys.ranking.pipeline import Rankers
    from recsys.ranking.scoring import PreferenceScorer

    try:
        model = Rankers.from_pretrained(rankers).din["ragar"]
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise fail(f"--rankers {rankers}: no trained torch ranker ({e})") from None
    image_encoder, _ = _encoders(cfg)
    if not hasattr(image_encoder, "model") or not hasattr(image_encoder.model, "extract_features"):
        raise fail(f"the rank task needs a differentiable EfficientNet image encoder, not {cfg.encoder.image}")
    items = pl.read_parquet(data / "items.parquet")
    scorer = PreferenceScorer(model, item_table(items, emb, cfg.encoder.text_weight), read_table(data, "interactions"))
    return RankTask(scorer, image_encoder.model, cfg.encoder.image_size, pairs.user_ids, pairs.times)


def _train_and_save(cfg: RagarConfig, data: Path, out: Path, items, rd):
    from ragar.distributed import processes
    from recsys.ranking.pipeline import train_rankers

    procs = processes()  # under `accelerate launch`: the torch rankers train data parallel over the group
    rankers = train_rankers(rd, items, epochs=cfg.ranker.epochs, seed=cfg.ranker.seed, progress=procs.is_main,
                            device=get_runtime(cfg).device)
    if not procs.is_main:
        return None
    rankers.save_pretrained(out)
    (out / "ranker_config.json").write_text(json.dumps({"config": json.loads(cfg.model_dump_json()),
                                                        "data": str(data), "encoder": cfg.encoder.image}, indent=2))
    return rankers


@eval_app.command("ranker")
def eval_ranker(
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory")],
    rankers: Annotated[Path, typer.Option("--rankers", "-r", help="directory written by `ragar train ranker`")],
    out: Annotated[Path | None, typer.Option(help="report directory (default: DATA/report)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """NDCG@10, HR@10, AUC, GAUC on the held-out window against popularity, cosine and the
    uniform-history variants; per-category HR@10; calibration; on the world, Spearman with the oracle."""
    from recsys.ranking.pipeline import Rankers

    cfg = get_config(config, set_, device)
    if not (rankers / "rankers.json").exists():
        raise fail(f"{rankers} holds no rankers (no rankers.json); train them with `ragar train ranker`")
    loaded = Rankers.from_pretrained(rankers)
    items, rd = _ranking_data(cfg, data)
    return _evaluate_and_report(cfg, data, loaded, items, rd, out or data / "report")


def _evaluate_and_report(cfg: RagarConfig, data: Path, loaded, items, rd, out: Path) -> dict:
    from eval.report import write_json
    from recsys.ranking.pipeline import evaluate_rankers

    res = evaluate_rankers(loaded, rd, items)
    if (data / "world.json").exists():
        res["oracle_spearman"] = _oracle_spearman(cfg, data, loaded, rd, items)
    print_table(res["rows"], "rankers on the held-out window (same requests)")
    print_table(res["per_category"], "HR@10 by the held-out item's category")
    extra = [{"what": k, "value": v} for k, v in res["calibration"].items()]
    if "oracle_spearman" in res:
        extra += [{"what": f"spearman(score, oracle utility) [{k}]", "value": v}
                  for k, v in res["oracle_spearman"].items()]
    print_table(extra, "torch ranker: calibration and oracle agreement")
    write_json(res, out / "ranker.json")
    path = _ranker_report(res).write(out / "ranker.html")
    console.print(f"wrote {out / 'ranker.json'} and {path}")
    return res


def _oracle_spearman(cfg: RagarConfig, data: Path, rankers, rd, items) -> dict:
    """Score a *different view* of each held-out item than the ranker saw, and compare with the
    oracle utility of that item for that user."""
    import numpy as np
    import polars as pl

    from ragar.encoders.catalog import embed_catalog
    from recsys.ranking.pipeline import subset, utility_spearman
    from recsys.world.oracle import World

    world = World(data)
    rng = np.random.default_rng(cfg.ranker.seed)
    n = min(cfg.ranker.spearman_pairs, rd.test.samples.height)
    rows = np.sort(rng.choice(rd.test.samples.height, n, replace=False))
    sp = subset(rd.test, rows)
    views = world.views.filter((pl.col("kind") == "view") & pl.col("view_id").str.ends_with("-v1"))
    other = views.select(pl.col("view_id").alias("item_id"), "image", pl.col("item_id").alias("of"))
    img_enc, _ = _encoders(cfg)
    emb = embed_catalog(data, img_enc, None, items=other.with_columns(pl.lit("").alias("title")), progress=False)
    vec = dict(zip(other["of"].to_list(), emb.image, strict=True))
    cand = np.stack([vec[i] for i in sp.samples["item_id"]])
    util = world.item_utility(sp.samples["user_id"].to_numpy(), sp.samples["item_id"].to_numpy())
    return {k: utility_spearman(m, sp, cand, util, items) for k, m in rankers.din.items()}


def _ranker_report(res: dict):
    import matplotlib.pyplot as plt

    from eval.report import HtmlReport

    k = res["k"]
    rep = HtmlReport("Rankers on the held-out time window")
    rep.paragraph(f"NDCG@{k}, AUC and GAUC on the logged slates of the test window (graded: like 2, click 1); "
                  f"HR@{k}: each test click's item among sampled catalog candidates. Differences to cosine are "
                  "paired over requests with a 95% bootstrap interval.")
    rep.table(res["rows"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = [r["model"] for r in res["rows"]]
    d = [r[f"ndcg@{k}_vs_cosine"] for r in res["rows"]]
    err = [[r[f"ndcg@{k}_vs_cosine"] - r["vs_cosine_ci95_lo"] for r in res["rows"]],
           [r["vs_cosine_ci95_hi"] - r[f"ndcg@{k}_vs_cosine"] for r in res["rows"]]]
    ax.bar(names, d, yerr=err, capsize=4, color=["#c33" if x > 0 else "#888" for x in d])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title(f"NDCG@{k} minus cosine (95% CI)")
    ax.tick_params(axis="x", rotation=30)
    rep.figure(fig, "Paired difference to the cosine baseline")
    rep.heading("HR@10 by category")
    rep.table(res["per_category"])
    rep.heading("Calibration and oracle agreement of the torch ranker")
    rep.table([{"what": a, "value": b} for a, b in res["calibration"].items()]
              + [{"what": f"spearman [{a}]", "value": b} for a, b in res.get("oracle_spearman", {}).items()])
    return rep


# --- demo ---------------------------------------------------------------------------------------

# --- generation -------------------------------------------------------------------------------

GeneratorOpt = Annotated[Path | None, typer.Option(help="a trained generator (default: the shipped demo generator)")]
RankersOpt = Annotated[Path | None, typer.Option("--rankers", "-r", help="trained rankers (preference-fit scores)")]


def _personalizer(cfg: RagarConfig, data: Path, generator: Path | None, rankers: Path | None):
    from ragar.generation.loading import personalizer_from_config

    try:
        return personalizer_from_config(cfg, data, generator, rankers, runtime=get_runtime(cfg))
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise fail(str(e).strip("'\"")) from None


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
    rep.heading("Reference").gallery([(np.asarray(Image.open(ref_img).convert("RGB")), res.reference_source)], 128)
    shown = [h for h in res.history if h.weight > 0][:12] or res.history[:12]
    rep.heading(f"History ({len(res.history)} items; the {len(shown)} heaviest, with their weights)")
    rep.gallery([(np.asarray(Image.open(p.reference_images[h.item_id]).convert("RGB")),
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
    _batch_report(merged, summary, p, out)
    print_table([{k: v for k, v in summary.items() if k != "fallbacks"}], f"generate-batch -> {out}/merged.parquet")
    console.print(f"wrote {out}/index.html")
    return summary


def _batch_report(merged, summary: dict, p, out: Path, show: int = 32) -> None:
    """The first users' images with their scores, and the score distributions, as one page."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from eval.report import HtmlReport

    rep = HtmlReport(f"generate-batch: {summary['rows']} rows ({summary['method']}, n={summary['n']})")
    rep.paragraph(f"{summary['users']} users on {summary['processes']} process(es); fallbacks: "
                  f"{summary['fallbacks'] or 'none'}. Every row is in merged.parquet; images under images/.")
    refs = merged["reference_item_id"].unique().sort().to_list()[:8]
    rep.heading("References").gallery([(np.asarray(Image.open(p.reference_images[r]).convert("RGB")), r)
                                       for r in refs])
    head = merged.head(show)
    rep.heading(f"The first {head.height} rows")
    rep.gallery([(np.asarray(Image.open(out / img).convert("RGB")), f"{u} fit={f:.3f} id={i:.3f}")
                 for u, img, f, i in head.select("user_id", "image", "preference_fit", "identity").iter_rows()])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, col in zip(axes, ("preference_fit", "identity"), strict=True):
        v = merged[col].to_numpy()
        ax.hist(v[~np.isnan(v)], bins=30)
        ax.set_title(col)
    fig.tight_layout()
    rep.figure(fig, "the chosen candidate's scores over all rows")
    rep.write(out / "index.html")


@train_app.command("attribute-reader")
def train_attribute_reader_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the reader is saved")],
    image_size: int = 32,
    epochs: int = 8,
    seed: int = 0,
    device: DeviceOpt = None,
) -> None:
    """Train the world's attribute reader (reads category, parts and style off generated images)."""
    from eval.report import write_json
    from recsys.world.attributes import train_attribute_reader

    if not (data / "views.parquet").exists():
        raise fail(f"{data} is not a world directory (no views.parquet)")
    model, acc = train_attribute_reader(data, image_size=image_size, epochs=epochs, seed=seed,
                                        device=device_runtime(device).device)
    model.save_pretrained(out)
    write_json({"held_out_accuracy": acc, "data": str(data), "image_size": image_size, "epochs": epochs,
                "seed": seed}, out / "accuracy.json")
    print_table([{"attribute": k, "held-out accuracy": v} for k, v in acc.items() if k != "held_out_renders"],
                f"attribute reader ({acc['held_out_renders']} held-out renders) saved to {out}")


@eval_app.command("generation")
def eval_generation(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (needs the oracle)")],
    rankers: RankersOpt = None,
    generator: GeneratorOpt = None,
    rank_generator: Annotated[Path | None, typer.Option(help="the generator fine-tuned with the rank task")] = None,
    ablation_generator: Annotated[Path | None, typer.Option(
        help="the same fine-tuning without the rank task")] = None,
    reader: Annotated[Path | None, typer.Option(help="attribute reader (default: the shipped one)")] = None,
    requests: int = 200,
    best_of: Annotated[int, typer.Option(help="N of the best-of-N row (0: no such row)")] = 4,
    seed: int = 0,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/generation"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Compare RAGAR (with and without the rank task, and best-of-N) against uniform-history and
    reference-only conditioning: oracle preference fit against identity kept, same requests and seeds."""
    from eval.generation import Method, evaluate_generation, sample_requests
    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World

    cfg = get_config(config, set_, device)
    try:
        world = World(data)
        rt = get_runtime(cfg)
        attr = AttributeReader.from_pretrained(reader or DEMO_ATTRIBUTE_READER).to(rt.device, rt.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    base = _personalizer(cfg, data, generator, rankers)
    methods = [Method("ragar", base, "ragar"), Method("uniform", base, "uniform"),
               Method("reference-only", base, "reference-only")]
    if best_of > 1:
        methods.append(Method(f"ragar + best-of-{best_of}", base, "ragar", best_of))
    for name, path in (("ragar + rank task", rank_generator), ("ragar, same fine-tuning without rank task",
                                                                ablation_generator)):
        if path is not None:
            methods.append(Method(name, _personalizer(cfg, data, path, rankers), "ragar"))
    reqs = sample_requests(world, requests, seed)
    res = evaluate_generation(world, attr, methods, reqs, seed=seed)
    _generation_report(res, world, methods[0].personalizer, reqs, out)
    return res


def _generation_report(res: dict, world, personalizer, reqs, out: Path) -> None:
    import matplotlib.pyplot as plt
    import polars as pl
    from PIL import Image

    from eval.generation import identity_grid
    from eval.report import HtmlReport, write_json

    images = res.pop("images")
    write_json(res, out / "generation.json")
    cols = ["utility", "ideal_palette", "category_kept", "parts_kept", "identity_cos", "ranker_fit"]
    table = [{"method": r["method"], **{k: (r[k]["mean"] if r.get(k) else float("nan")) for k in cols}}
             for r in res["rows"]]
    print_table(table, f"generation on {res['requests']} requests (same seeds): preference fit vs identity kept")
    diffs = [{"method": d["method"], "vs": d["versus"], "metric": d["metric"], "diff": d["diff"],
              "95% CI": f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"} for d in res["differences"]
             if d["metric"] in ("utility", "parts_kept")]
    print_table(diffs, "paired differences (bootstrap over requests)")
    rep = HtmlReport("Personalized generation on the world")
    rep.paragraph("Each method answers the same (user, reference) requests with the same seeds. Preference fit: "
                  "oracle utility of the style the attribute reader reads off the image, for this user in the "
                  "reference's category; ideal_palette: the read colour is the user's favourite for that category. "
                  "Identity kept: read category and parts equal the reference's; identity_cos: cosine to the "
                  "reference in the identity encoder's space. The oracle row conditions the first method's "
                  "generator on the catalog item this user likes most in the category: the generator's "
                  "ceiling when the preference is exactly right.")
    rep.table(table, "means over requests")
    rep.table(diffs, "paired differences, 95% bootstrap intervals")
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for a, k in zip(ax, ("utility", "parts_kept"), strict=True):
        rows = [r for r in res["rows"] if r.get(k)]
        a.barh([r["method"] for r in rows], [r[k]["mean"] for r in rows],
               xerr=np.array([[r[k]["mean"] - r[k]["ci"][0], r[k]["ci"][1] - r[k]["mean"]] for r in rows]).T)
        a.set_title(k)
    fig.tight_layout()
    rep.figure(fig, "means with 95% bootstrap intervals over requests")
    names = list(images)
    k = min(8, len(reqs))
    size = images[names[0]].shape[1:3]
    ref_imgs = [np.asarray(Image.open(personalizer.reference_images[i]).convert("RGB").resize(size))
                for i in reqs["reference_item_id"][:k]]
    grid = np.concatenate([np.concatenate(ref_imgs, 1)] + [np.concatenate(list(images[n][:k]), 1) for n in names], 0)
    rep.image(np.kron(grid, np.ones((3, 3, 1), np.uint8)),
              "rows: the reference, then " + ", ".join(names) + " (columns: requests)")
    # one reference for several users with different preferences
    cat = reqs["category"][0]
    users = (pl.read_parquet(world.root / "users.parquet")["user_id"].head(200).to_list())
    o = world.oracle
    from recsys.world.oracle import user_index

    ideal = o.palette[user_index(users), o.category_index([cat])[0]].argmax(-1)
    picked = [next(u for u, p in zip(users, ideal, strict=True) if p == q) for q in sorted(set(ideal.tolist()))][:6]
    row = identity_grid(personalizer, picked, reqs["reference_item_id"][0])
    from recsys.world.render import PALETTES

    rep.heading("One reference, several users")
    rep.gallery([(img, f"{u}: likes {PALETTES[int(ideal[users.index(u)])][0]} {cat}s") for u, img in
                 zip(picked, row, strict=True)], 96)
    strip = np.concatenate([ref_imgs[0], *row], 1)
    Image.fromarray(np.kron(strip, np.ones((4, 4, 1), np.uint8))).save(out / "one_reference_many_users.png")
    Image.fromarray(np.kron(grid, np.ones((3, 3, 1), np.uint8))).save(out / "methods_grid.png")
    rep.write(out / "generation.html")
    console.print(f"wrote {out}/generation.json and {out}/generation.html")


@train_app.command("identity-encoder")
def train_identity_encoder(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (views and distractors); SSR is "
                                                            "measured on its held-out identities")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the NearID head is saved")],
    extra_data: Annotated[list[Path] | None, typer.Option(
        "--extra-data", help="more worlds (other seeds) whose identities all train the head: more identities "
                             "generalise better (repeatable, or a list after one flag)")] = None,
    steps: int = 1200,
    image_size: int = 128,
    levels: Annotated[str | None, typer.Option(help="backbone feature maps used as tokens, comma-separated "
                                                    "(block<i>, head); default block10,block14,head")] = None,
    holdout: float = 0.2,
    seed: int = 0,
    device: DeviceOpt = None,
) -> dict:
    """Train the NearID identity encoder (frozen EfficientNet + attention-pooling head, two-tier
    loss) and report Sample Success Rate on held-out identities, backbone alone against with head."""
    import torch

    from eval.metrics.identity import sample_success_rate
    from eval.report import write_json
    from ragar.encoders.nearid import (
        DEFAULT_LEVELS,
        NearIDConfig,
        NearIDTraining,
        backbone_tokens,
        embed_tokens,
        merge_splits,
        ssr_triplets,
        train_nearid,
        world_identity_split,
    )

    worlds = [data, *(extra_data or [])]
    for w in worlds:
        if not (w / "views.parquet").exists():
            raise fail(f"{w} is not a world directory (no views.parquet)")
    level_list = tuple(x.strip() for x in levels.split(",") if x.strip()) if levels else DEFAULT_LEVELS
    dev = device_runtime(device).device
    t0 = time.perf_counter()
    splits = [world_identity_split(w, holdout, seed) for w in worlds]
    try:
        per_world = [backbone_tokens(sp.paths, image_size, level_list, progress=True, desc=f"backbone tokens {w.name}",
                                     cache_dir=w / ".ragar_cache", device=dev)
                     for sp, w in zip(splits, worlds, strict=True)]
    except ValueError as e:
        raise fail(str(e)) from e
    split = merge_splits(splits[0], splits[1:])
    main_tokens = per_world[0]  # SSR is measured on the main world alone
    tokens = [torch.cat(parts) for parts in zip(*per_world, strict=True)] if len(per_world) > 1 else main_tokens
    del per_world  # the extra worlds' tokens now live only in the concatenation
    cfg = NearIDConfig(levels=level_list, feature_dims=tuple(x.shape[2] for x in tokens),
                       tokens=tuple(x.shape[1] for x in tokens), image_size=image_size)
    head, losses = train_nearid(tokens, split, cfg, NearIDTraining(steps=steps, seed=seed), device=dev)
    head.save_pretrained(out)
    trip = ssr_triplets(split, split.held_out, seed + 1)
    unit = torch.nn.functional.normalize
    spaces = {}
    if "head" in level_list:
        spaces["backbone (pooled features)"] = main_tokens[level_list.index("head")].float().mean(1)
    spaces["backbone (pooled, every level)"] = torch.cat([unit(x.float().mean(1), dim=-1) for x in main_tokens], 1)
    spaces["NearID (backbone + head)"] = embed_tokens(head, main_tokens)
    rows = []
    for name, emb in spaces.items():
        a, p, d = emb[trip["anchor"]], emb[trip["positive"]], emb[trip["distractor"]][:, None]
        row = {"encoder": name, "ssr": float(sample_success_rate(a, p, d))}
        for part in sorted(set(trip["part"].tolist())):
            m = torch.from_numpy(trip["part"] == part)
            row[f"ssr[{part}]"] = float(sample_success_rate(a[m], p[m], d[m]))
        rows.append(row)
    train_ids = set(split.identity.tolist()) - split.held_out
    rep = {"held_out_identities": len(split.held_out), "triplets": len(trip["anchor"]),
           "training_identities": len(train_ids), "worlds": [str(w) for w in worlds], "levels": list(level_list),
           "image_size": image_size, "steps": steps, "seed": seed,
           "first_loss": float(np.mean(losses[:20])), "final_loss": float(np.mean(losses[-20:])),
           "seconds": time.perf_counter() - t0, "rows": rows}
    write_json(rep, out / "ssr.json")
    overall = [{k: v for k, v in r.items() if not k.startswith("ssr[")} for r in rows]
    print_table(overall, f"Sample Success Rate on {rep['triplets']} held-out triplets "
                         f"({rep['held_out_identities']} identities; head trained on {len(train_ids)}); "
                         f"per-part in {out}/ssr.json")
    return rep


@eval_app.command("replay")
def eval_replay(
    data: Annotated[Path, typer.Option("--data", "-d", help="dataset directory (a world adds oracle metrics)")],
    rankers: RankersOpt = None,
    generator: GeneratorOpt = None,
    methods: Annotated[str, typer.Option(help="comma-separated: ragar,uniform,recency,reference-only")] = (
        "ragar,uniform,reference-only"),
    requests: int = 200,
    n: Annotated[int, typer.Option("--n", help="candidates per request (best-of-N)")] = 1,
    cut: float = 0.8,
    k: int = 10,
    seed: int = 0,
    tradeoff_scales: Annotated[str, typer.Option(help="preference guidance scales for the trade-off plot "
                                                      "('' to skip)")] = "0,1,2,3,5",
    reader: Annotated[Path | None, typer.Option(help="attribute reader (world only; default: shipped)")] = None,
    unit_size: Annotated[int, typer.Option(help="requests per resumable unit of users (independent of the "
                                                "process count)")] = 64,
    gallery: Annotated[bool, typer.Option(help="Finer-Personalization Rank over every render of the world (slow "
                                               "on a large world: it embeds them all)")] = True,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/replay"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Replay held-out requests from the log: every method generates from the same past with the
    same seeds; semantic, personalization, identity and retrieval metrics; JSON + HTML report.
    Resumable: rerun the same command after an interruption. Runs on one process or many under
    `accelerate launch --multi_gpu --num_processes N $(which ragar) eval replay ...`; the last
    process to finish merges and writes the report."""
    from eval.replay import Replay, replay_requests, run_replay, summarize
    from ragar.distributed import processes
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder
    from recsys.preference import METHODS

    cfg = get_config(config, set_, device)
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in wanted if m not in METHODS]
    if bad or not wanted:
        raise fail(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    try:
        reqs, held = replay_requests(data, requests, cut, seed)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    if unit_size < 1:
        raise fail("--unit-size must be at least 1")
    procs = processes()
    p = _personalizer(cfg, data, generator, rankers)
    rt = get_runtime(cfg)
    world, attr = _world_and_reader(data, reader, rt)
    rp = Replay(p, data, reqs, held, k, EfficientNetLiteEncoder(128).to(rt.device, rt.dtype), world, attr,
                gallery=gallery)
    try:
        scores = run_replay(rp, wanted, out, n=n, seed=seed, unit_size=unit_size, procs=procs)
    except ValueError as e:
        raise fail(str(e)) from None
    if scores is None:
        console.print(f"process {procs.index + 1}/{procs.count}: its units are done; the last process to finish "
                      "merges and reports")
        return None
    summary = summarize(scores, seed=seed)
    scales = [float(s) for s in tradeoff_scales.split(",") if s.strip()]
    summary["tradeoff"] = _tradeoff(rp, scales, seed) if scales else []
    _replay_report(summary, rp, wanted, out, seed)
    return summary


def _world_and_reader(data: Path, reader: Path | None, runtime=None):
    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World

    if not (data / "world.json").exists():
        return None, None
    try:
        attr = AttributeReader.from_pretrained(reader or DEMO_ATTRIBUTE_READER)
        return World(data), attr if runtime is None else attr.to(runtime.device, runtime.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None


def _tradeoff(rp, scales: list[float], seed: int, n_requests: int = 48) -> list[dict]:
    """RAGAR at several preference guidance scales on the first requests: consistency vs preference."""
    from tqdm.auto import tqdm

    rows = rp.requests[:n_requests]
    out = []
    for s in tqdm(scales, desc="trade-off sweep"):
        df = rp.score_chunk(rows, "ragar", 1, seed, preference_guidance_scale=s)
        out.append({"preference_guidance_scale": s, **{c: float(np.nanmean(df[c].to_numpy())) for c in df.columns
                                                     if c not in ("request_idx", "method")}})
    return out


def _replay_report(summary: dict, rp, methods: list[str], out: Path, seed: int) -> None:
    import matplotlib.pyplot as plt

    from eval.report import HtmlReport, write_json

    write_json(summary, out / "replay.json")
    keys = [k for k in ("utility", "ideal_palette", "hist_cos", "ranker_fit", f"hr@{rp.k}", f"ndcg@{rp.k}",
                        "sem_cos", "ssim", "clpips", "identity_cos", "parts_kept") if k in summary["metrics"]]
    table = [{"method": r["method"], **{k: (r[k]["mean"] if r.get(k) else float("nan")) for k in keys}}
             for r in summary["rows"]]
    print_table(table, f"offline replay: {summary['requests']} held-out requests, same seeds")
    rep = HtmlReport("Offline replay")
    rep.paragraph(f"{summary['requests']} held-out positive events after the time cut; each method generates "
                  "from the user's past only, with the same seed. Personalization: utility / ideal_palette "
                  "(world oracle via the attribute reader), hist_cos (cosine x100 to the user's history, Pigeon's "
                  "Hist), ranker_fit, and HR/NDCG of the user's held-out items when the image queries the catalog. "
                  "Semantic (to the reference): sem_cos (x100), SSIM, CLPIPS (lower is closer), identity_cos, "
                  "parts_kept.")
    rep.table(table, "means over requests")
    diffs = [{"method": d["method"], "vs": d["versus"], "metric": d["metric"], "diff": d["diff"],
              "95% CI": f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"} for d in summary["differences"]]
    rep.table(diffs, "paired differences against the baselines (bootstrap over requests)")
    show = [k for k in ("utility", "hist_cos", f"ndcg@{rp.k}", "sem_cos") if k in keys]
    fig, axes = plt.subplots(1, len(show), figsize=(4 * len(show), 3))
    for ax, k in zip(np.atleast_1d(axes), show, strict=True):
        rows = [r for r in summary["rows"] if r.get(k)]
        ax.bar([r["method"] for r in rows], [r[k]["mean"] for r in rows],
               yerr=np.array([[r[k]["mean"] - r[k]["ci"][0], r[k]["ci"][1] - r[k]["mean"]] for r in rows]).T,
               capsize=4)
        ax.set_title(k)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    rep.figure(fig, "means with 95% bootstrap intervals over requests")
    fig.savefig(out / "replay_bars.png", dpi=110, bbox_inches="tight")
    if summary["tradeoff"]:
        t = summary["tradeoff"]
        y = "utility" if "utility" in t[0] else "hist_cos"
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot([r["identity_cos"] for r in t], [r[y] for r in t], "o-")
        for r in t:
            ax.annotate(f"s={r['preference_guidance_scale']:g}", (r["identity_cos"], r[y]), fontsize=8)
        ax.set_xlabel("consistency: identity_cos to the reference")
        ax.set_ylabel(f"personalization: {y}")
        fig.tight_layout()
        fig.savefig(out / "tradeoff.png", dpi=110, bbox_inches="tight")
        rep.figure(fig, "RAGAR's personalization-consistency trade-off over the preference guidance scale")
    # image grid: the first requests, every method
    from PIL import Image

    k = min(8, rp.requests.height)
    rows = rp.requests[:k]
    size = rp.p.pipeline.unet.config.sample_size
    grid = [np.concatenate([np.asarray(Image.open(rp.p.reference_images[i]).convert("RGB")
                                       .resize((size, size))) for i in rows["reference_item_id"]], 1)]
    for m in methods:
        res = rp.p(rows["user_id"].to_list(), rows["reference_item_id"].to_list(), n=1, method=m,
                   seed=[seed + int(i) for i in rows["request_idx"]], as_of=rows["as_of"].to_list(), score=False)
        grid.append(np.concatenate([r.best.image for r in res], 1))
    rep.image(np.kron(np.concatenate(grid, 0), np.ones((3, 3, 1), np.uint8)),
              "rows: the reference, then " + ", ".join(methods) + "; columns: requests (same seed per column)")
    rep.write(out / "replay.html")
    console.print(f"wrote {out}/replay.json and {out}/replay.html")


def _image_table(path: Path, what: str):
    """An identity-labelled image CSV (image, identity[, category]) and its image paths."""
    from recsys.data.io import read_csv_with

    try:
        df = read_csv_with(path, ("image", "identity"), what)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    return df, [str(path.parent / p) for p in df["image"]]


@eval_app.command("fpr")
def eval_fpr(
    gallery: Annotated[Path, typer.Option(help="CSV: image, identity[, category] (paths relative to the CSV); "
                                               "include near-identity distractors under their own identity")],
    queries: Annotated[Path, typer.Option(help="CSV: image, identity[, category] of the generated images")],
    encoder: Annotated[str, typer.Option(help="identity encoder spec (nearid:<dir>, nearid:demo, "
                                              "efficientnet-lite0, clip:<dir>)")] = "nearid:demo",
    k: int = 100,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/fpr"),
) -> dict:
    """Finer-Personalization Rank of generated images against any identity-labelled gallery (faiss)."""
    from eval.metrics.identity import IdentityGallery
    from eval.report import write_json
    from ragar.encoders.base import ImageInputError
    from ragar.encoders.registry import build_image_encoder

    g, gpaths = _image_table(gallery, "gallery")
    q, qpaths = _image_table(queries, "queries")
    try:
        enc = build_image_encoder(encoder)
        gal = IdentityGallery(enc.encode(gpaths, progress=True), g["identity"].cast(str).to_list(),
                              g["category"].to_list() if "category" in g.columns else None)
        res = gal.evaluate(enc.encode(qpaths, progress=True), q["identity"].cast(str).to_list(),
                           q["category"].to_list() if "category" in q.columns else None, k=k)
    except (ImageInputError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    write_json({"encoder": encoder, "gallery": str(gallery), "queries": str(queries), **res}, out / "fpr.json")
    rows = [{"category": "all", **{m: v for m, v in res.items() if m != "per_category"}}]
    rows += [{"category": c, **v} for c, v in res.get("per_category", {}).items()]
    print_table(rows, f"Finer-Personalization Rank ({len(gal)} gallery images, {encoder})")
    return res


def _personalize_settings(cfg: RagarConfig, steps: int | None, seed: int | None):
    pe = cfg.personalize_encoder
    lora = pe.lora.model_copy(update={k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None})
    data = pe.data.model_copy(update={"seed": seed} if seed is not None else {})
    return lora, data


def _negative_images(data: Path) -> list[str]:
    """Other objects to train against: every render of a world (views and near-identity
    distractors), else the catalog's item images."""
    import polars as pl

    table = data / "views.parquet" if (data / "views.parquet").exists() else data / "items.parquet"
    if not table.exists():
        raise fail(f"{data} has no items.parquet: not a dataset directory")
    return [str(data / p) for p in pl.read_parquet(table, columns=["image"])["image"]]


@app.command("personalize-encoder")
def personalize_encoder(
    images: Annotated[list[Path], typer.Option("--images", "-i", help="real images of the one object "
                                               "(3 recommended): --images A.png B.png C.png")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the personalized encoder is saved")],
    data: Annotated[Path, typer.Option("--data", "-d", help="catalog the negatives and borrowed styles come "
                                       "from")] = Path("runs/demo/world"),
    generator: GeneratorOpt = None,
    variant: Annotated[str, typer.Option(help="personalized (pastes + generated data) | real-only")] = "personalized",
    name: Annotated[str | None, typer.Option(help="what the object is called (default: the out dir name)")] = None,
    steps: Annotated[int | None, typer.Option(help="LoRA steps (default: personalize_encoder.lora.steps)")] = None,
    seed: int | None = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Learn one object from a few real images (seed paper 004): the generator makes positives
    (and pastes the object on new backgrounds) and look-alike negatives, and a LoRA on the image
    encoder is trained with infoNCE. Use the result anywhere an encoder is accepted as
    personalized:OUT."""
    from eval.report import HtmlReport, write_json
    from ragar.encoders.base import ImageInputError
    from ragar.generation.personal_encoder import save_result, train_personalized_encoder

    cfg = get_config(config, set_, device)
    if variant not in ("personalized", "real-only"):
        raise fail(f"unknown variant {variant!r}: personalized or real-only")
    lora, synth = _personalize_settings(cfg, steps, seed)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise fail(f"not a file: {', '.join(missing)}")
    negatives = _negative_images(data)
    try:
        from ragar.generation.synthetic import read_real_images

        reals = read_real_images([str(p) for p in images])  # refuse bad input before loading any model
        p = _personalizer(cfg, data, generator, None) if variant == "personalized" else None
        res = train_personalized_encoder(reals, negatives, variant=variant, personalizer=p,
                                         data=synth, lora=lora, progress=True, device=get_runtime(cfg).device)
    except (ImageInputError, ValueError) as e:
        raise fail(str(e)) from None
    save_result(res, out, name or out.name, variant, lora, synth, [str(i) for i in images])
    summary = {"out": str(out), "variant": variant, "images": [str(i) for i in images],
               "training_images": res.training_set.kinds, "first_loss": float(np.mean(res.losses[:10])),
               "final_loss": float(np.mean(res.losses[-10:])), "seconds": res.seconds,
               "use_as": f"personalized:{out}"}
    write_json(summary, out / "summary.json")
    ts = res.training_set
    rep = HtmlReport(f"Personalized encoder: {name or out.name} ({variant})")
    rep.table([{"role": k, "images": v} for k, v in ts.kinds.items()], "training images")
    n_aug = len(ts.anchors)
    rep.heading("Anchors (real images and their augmentations)").gallery([(a, "") for a in ts.anchors[:16]], 64)
    if len(ts.positives) > n_aug:
        rep.heading("Synthetic positives (pastes, then generated)").gallery(
            [(a, "") for a in ts.positives[n_aug:n_aug + 48:2]], 64)
    if ts.generated_negatives:
        rep.heading("Generated negatives (look-alikes in this object's style)").gallery(
            [(a, "") for a in ts.generated_negatives[:24]], 64)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(res.losses)
    ax.set(xlabel="step", ylabel="infoNCE loss")
    rep.figure(fig, "training loss")
    rep.write(out / "report.html")
    print_table([{k: v for k, v in summary.items() if k in ("variant", "first_loss", "final_loss", "use_as")}],
                f"personalized encoder from {len(images)} images")
    console.print(f"wrote {out}/report.html")
    return summary


@eval_app.command("personalized-encoder")
def eval_personalized_encoder(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory")] = Path("runs/demo/world"),
    identities: Annotated[int, typer.Option(help="held-out identities to personalize for (>= 20 for the "
                                                 "issue's claim)")] = 24,
    generator: GeneratorOpt = None,
    steps: Annotated[int | None, typer.Option(help="LoRA steps (default: personalize_encoder.lora.steps)")] = None,
    seed: int | None = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/personalized-encoder"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Personalized retrieval NDCG and classification PR-AUC on the world's held-out identities,
    3 real images each: base encoder vs a LoRA on the real images alone vs the personalized LoRA."""
    from eval.personalized_repr import evaluate_world
    from eval.report import write_json

    cfg = get_config(config, set_, device)
    lora, synth = _personalize_settings(cfg, steps, seed)
    if not (data / "views.parquet").exists():
        raise fail(f"{data} is not a world directory (no views.parquet)")
    p = _personalizer(cfg, data, generator, None)
    examples = {}

    def on_target(row, results):
        write_json(row, out / "targets" / f"{row['identity']}.json")
        if not examples:
            examples.update(row=row, set=results["personalized"].training_set)

    try:
        res = evaluate_world(data, p, identities, lora, synth, seed=lora.seed, on_target=on_target,
                             device=get_runtime(cfg).device)
    except ValueError as e:
        raise fail(str(e)) from None
    res["settings"] = {"lora": lora.model_dump(), "data": synth.model_dump()}
    write_json(res, out / "personalized_encoder.json")
    _personalized_report(res, examples, out)
    rows = [{"encoder": e["encoder"], "metric": e["metric"], "mean": e["mean"],
             "95% CI": f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]"} for e in res["summary"]["encoders"]]
    print_table(rows, f"personalized representations over {res['identities']} held-out identities")
    print_table([{k: v for k, v in d.items()} for d in res["summary"]["differences"]], "paired differences")
    console.print(f"wrote {out}/report.html")
    return res


def _personalized_report(res: dict, examples: dict, out: Path) -> None:
    import matplotlib.pyplot as plt

    from eval.report import HtmlReport

    rep = HtmlReport("Personalized representations from personalized generation")
    p = res["protocol"]
    rep.paragraph(f"{res['identities']} held-out identities; 3 real images each (3 views of one item); gallery: "
                  f"every render of the {p['held_out_identities']} held-out identities incl. near-identity "
                  f"distractors ({p['gallery_images']} images); training negatives: {p['training_negatives']} "
                  "renders of training identities only.")
    enc = res["summary"]["encoders"]
    rep.table(enc, "means over identities, 95% bootstrap CI")
    rep.table(res["summary"]["differences"], "paired differences")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, metric in zip(axes, ("ndcg", "pr_auc"), strict=True):
        rows = [e for e in enc if e["metric"] == metric]
        ax.bar([r["encoder"] for r in rows], [r["mean"] for r in rows],
               yerr=[[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]], capsize=4,
               color=["#999", "#6a9fd8", "#d86a6a"])
        ax.set_title(metric)
    rep.figure(fig, "means with 95% bootstrap intervals over identities")
    rep.table(res["rows"], "per identity")
    if examples:
        ts = examples["set"]
        n = len(ts.anchors)
        rep.heading(f"Training images of {examples['row']['identity']}")
        rep.gallery([(a, "anchor") for a in ts.anchors[:6]] + [(a, "pasted / generated") for a in
                                                               ts.positives[n:n + 96:8]], 64)
        rep.gallery([(a, "generated negative") for a in ts.generated_negatives[:12]], 64)
    rep.write(out / "report.html")


@eval_app.command("clpips")
def eval_clpips(
    data: Annotated[Path, typer.Option("--data", "-d", help="image root (a world directory for world pairs)")],
    pairs: Annotated[Path | None, typer.Option(
        help="ranked pairs CSV: reference,a,b,closer[,dist_a,dist_b] (paths relative to DATA); "
             "default: judged from world attributes")] = None,
    n_pairs: int = 3000,
    image_size: int = 128,
    seed: int = 0,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/clpips"),
) -> dict:
    """Fit CLPIPS layer weights on ranked pairs; report 2AFC, Spearman and ICC on held-out pairs,
    fitted against unfitted."""
    from eval.metrics.clpips import fit_and_evaluate, read_ranked_pairs, world_ranked_pairs
    from eval.report import write_json
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder

    try:
        if pairs is not None:
            table = read_ranked_pairs(pairs)
            source = str(pairs)
        else:
            if not (data / "views.parquet").exists():
                raise FileNotFoundError(f"{data} is not a world directory; give --pairs CSV")
            table = world_ranked_pairs(data, n_pairs, seed)
            source = "world attributes (each differing part, palette, pattern, finish: 1; proportions: |dw|+|dh|)"
        model, rep = fit_and_evaluate(EfficientNetLiteEncoder(image_size), table, data, seed=seed)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    model.save_pretrained(out / "clpips")
    rep["judgments"] = source
    write_json(rep, out / "clpips.json")
    print_table([{"distance": k, **rep[k]} for k in ("unfitted", "fitted")],
                f"CLPIPS on {rep['held_out_pairs']} held-out pairs (judged by: {source.split(' (')[0]})")
    return rep


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
    d = cfg.demo
    user = "u000001"
    import polars as pl

    first = pl.read_parquet(world_dir / "items.parquet")["item_id"][0]
    common = {"rankers": out / "rankers", "generator": None, "seed": 0, "config": config, "set_": set_}
    generate(user=user, data=world_dir, reference=first, reference_image=None, n=d.best_of, method=None,
             out=out / "generate", **common)
    eval_generation(data=world_dir, rank_generator=None, ablation_generator=None, reader=None,
                    requests=d.generation_requests, best_of=d.best_of, out=out / "generation", **common)
    eval_clpips(data=world_dir, pairs=None, n_pairs=d.clpips_pairs, image_size=128, seed=0, out=out / "clpips")
    eval_replay(data=world_dir, methods="ragar,uniform,reference-only", requests=d.replay_requests, n=1, cut=0.8,
                k=10, tradeoff_scales=d.tradeoff_scales, reader=None, out=out / "replay", **common)


def expand_list_options(argv: list[str], options: tuple[str, ...] = ("--images", "-i", "--extra-data")
                        ) -> list[str]:
    """``--images A B C`` -> ``--images A --images B --images C``: click options take one value
    each, and a list of files after one flag is what people type (and what the issue asks for)."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in options:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-"):
                out += ([argv[i]] if j > i + 1 else []) + [argv[j]]
                j += 1
            i = j
        else:
            i += 1
    return out


def main() -> None:
    import sys

    app(args=expand_list_options(sys.argv[1:]))


if __name__ == "__main__":
    main()
