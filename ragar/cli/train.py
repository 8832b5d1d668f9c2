"""``ragar train ...`` and ``ragar personalize-encoder``: every training command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ragar.cli.apps import app, train_app
from ragar.cli.common import (
    ConfigOpt,
    DeviceOpt,
    GeneratorOpt,
    SetOpt,
    _embed,
    _encoders,
    _personalize_settings,
    _personalizer,
    _ranking_data,
    device_runtime,
    get_config,
    get_runtime,
)
from ragar.cli.output import console, fail, print_table
from ragar.config import RagarConfig


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


def _json_value(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return str(value)


def _training_record(ctx: typer.Context) -> dict:
    """What a training run records of itself, as every evaluation does (:func:`ragar.provenance.run_record`):
    the whole command line, so a release can give each stage's command as it ran, the commit and the
    date; plus each option's value as JSON (``params``), for code that reads one option."""
    from ragar.provenance import run_record

    return run_record("ragar") | {"params": {k: _json_value(v) for k, v in ctx.params.items()}}


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (views.parquet)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where the autoencoder is saved")],
    steps: Annotated[int | None, typer.Option(help="override autoencoder.steps")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Train the generator's latent autoencoder on the world's renders (then train the generator
    with `--set generator.autoencoder=OUT`)."""
    from ragar.generation.autoencoder import train_autoencoder, world_renders

    cfg = get_config(config, [*(set_ or []), *([f"autoencoder.steps={steps}"] if steps else [])], device)
    if not (data / "views.parquet").exists():
        raise fail(f"{data} is not a world directory (no views.parquet)")
    images = world_renders(data, cfg.autoencoder.image_size, seed=cfg.autoencoder.seed)
    prov = _training_record(ctx) | {"data": str(data), "world_seed": cfg.world.seed}
    s = train_autoencoder(images, out, cfg.autoencoder, device=get_runtime(cfg).device, provenance=prov)
    print_table([{"images": s["images"], "steps": s["steps"], "final loss": s["final_loss"],
                  "held-out PSNR (dB)": s["psnr_held_out"], "scaling factor": s["scaling_factor"],
                  "seconds": round(s["seconds"], 1)}], f"autoencoder saved to {out}")


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
    prov = _training_record(ctx) | {"data": str(data), "world_seed": cfg.world.seed, "encoder": emb.fingerprint}
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


@train_app.command("export-pairs")
def export_pairs_cmd(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where pairs.safetensors and pairs.json go")],
    max_pairs: Annotated[int | None, typer.Option(help="export at most this many training pairs")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export the generator's training pairs as scenes and preference mixtures (a few MB), with the
    config's autoencoder and generator settings, for `python -m ragar.generation.recipe` on a GPU
    machine that has torch but not the data stack (docs/GENERATION.md, the 128-px recipe)."""
    from ragar.generation.pairs import make_pairs
    from ragar.generation.portable import save_pairs

    cfg = get_config(config, list(set_ or []), None)
    if not (data / "world.json").exists():
        raise fail(f"{data} is not a world directory (no world.json): only a world's pairs render elsewhere")
    emb = _embed(cfg, data)
    vectors = emb.combined(cfg.encoder.text_weight)
    g = cfg.generator
    try:
        pairs = make_pairs(data, emb.ids, vectors, g.image_size, cfg.preference, max_pairs=max_pairs, seed=g.seed,
                           style_pairs=g.style_pairs, style_columns=g.style_columns, render_images=False)
        doc = save_pairs(pairs, emb.ids, vectors, out, meta={
            "autoencoder": cfg.autoencoder.model_dump(), "generator": g.model_dump(),
            "provenance": {**_training_record(ctx), "world_seed": cfg.world.seed, "encoder": emb.fingerprint,
                           "preference": cfg.preference.model_dump()}})
    except ValueError as e:
        raise fail(str(e)) from None
    size = sum(f.stat().st_size for f in out.iterdir())
    print_table([{"pairs": doc["pairs"], "catalog items": doc["catalog_items"], "items per preference": doc["mix"],
                  "MB": round(size / 1e6, 1)}], f"pairs exported to {out}")


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

    from eval.metrics.identity import ssr_rows
    from eval.report import write_json
    from ragar.encoders.nearid import (
        DEFAULT_LEVELS,
        NearIDConfig,
        NearIDTraining,
        backbone_tokens,
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
    rows = ssr_rows(head, main_tokens, level_list, trip)
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
    from ragar.encoders.personalized import save_result, train_personalized_encoder

    cfg = get_config(config, set_, device)
    if variant not in ("personalized", "real-only"):
        raise fail(f"unknown variant {variant!r}: personalized or real-only")
    lora, synth = _personalize_settings(cfg, steps, seed)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise fail(f"not a file: {', '.join(missing)}")
    negatives = _negative_images(data)
    try:
        from ragar.encoders.synthetic import read_real_images

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
