"""``ragar eval ...``: wiring and printing; the evaluations and their pages live in :mod:`eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eval.pages import (
    generation_page,
    generation_tables,
    personalized_page,
    preference_page,
    ranker_page,
    replay_page,
    replay_table,
)
from eval.report import write_json
from ragar.cli.apps import eval_app
from ragar.cli.common import (
    ConfigOpt,
    DeviceOpt,
    GeneratorOpt,
    RankersOpt,
    SetOpt,
    _embed,
    _encoders,
    _personalize_settings,
    _personalizer,
    _ranking_data,
    _world_and_reader,
    get_config,
    get_runtime,
    provenance,
)
from ragar.cli.output import console, fail, print_table
from ragar.config import TRADEOFF_SCALES, RagarConfig


@eval_app.command("preference")
def eval_preference(
    data: Annotated[Path, typer.Option("--data", "-d", help="a world directory (needs the oracle)")],
    out: Annotated[Path | None, typer.Option(help="report directory (default: DATA/report)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
) -> dict:
    """Compare preference methods on the same (user, reference) pairs against the oracle."""
    from eval.preference import evaluate_preference
    from eval.report import write_json
    from recsys.preference import METHODS
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
    summary["provenance"] = provenance(cfg)
    write_json(summary, out / "preference.json")
    path = preference_page(world, emb.ids, res, cfg).write(out / "preference.html")
    console.print(f"wrote {out / 'preference.json'} and {path}")
    return summary


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
    if loaded.preference is not None and loaded.preference != cfg.preference:
        # LightGBM reads the RAGAR-weighted cosine as a feature: build it as the rankers were trained
        print(f"the rankers were trained with preference settings {loaded.preference.model_dump()}; "
              "their features are built with those, not the config's")
        cfg = cfg.model_copy(update={"preference": loaded.preference})
    items, rd = _ranking_data(cfg, data)
    return _evaluate_and_report(cfg, data, loaded, items, rd, out or data / "report")


def _evaluate_and_report(cfg: RagarConfig, data: Path, loaded, items, rd, out: Path) -> dict:
    from eval.ranker import evaluate_rankers, oracle_spearman

    res = evaluate_rankers(loaded, rd, items)
    if (data / "world.json").exists():
        res["oracle_spearman"] = oracle_spearman(cfg, data, loaded, rd, items, _encoders(cfg)[0])
    print_table(res["rows"], "rankers on the held-out window (same requests)")
    print_table(res["per_category"], "HR@10 by the held-out item's category")
    extra = [{"what": k, "value": v} for k, v in res["calibration"].items()]
    if "oracle_spearman" in res:
        extra += [{"what": f"spearman(score, oracle utility) [{k}]", "value": v}
                  for k, v in res["oracle_spearman"].items()]
    print_table(extra, "torch ranker: calibration and oracle agreement")
    res["provenance"] = provenance(cfg)
    write_json(res, out / "ranker.json")
    path = ranker_page(res).write(out / "ranker.html")
    console.print(f"wrote {out / 'ranker.json'} and {path}")
    return res


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
    images = res.pop("images")
    res["provenance"] = provenance(cfg)
    write_json(res, out / "generation.json")
    table, diffs = generation_tables(res)
    print_table(table, f"generation on {res['requests']} requests (same seeds): preference fit vs identity kept")
    print_table(diffs, "paired differences (bootstrap over requests)")
    generation_page(res, images, world, methods[0].personalizer, reqs, out).write(out / "generation.html")
    console.print(f"wrote {out}/generation.json and {out}/generation.html")
    return res


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
    tradeoff_scales: Annotated[str, typer.Option(help="preference guidance scales for the trade-off plot, "
                                                      "around the shipped 6 ('' to skip)")] = TRADEOFF_SCALES,
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
    from eval.replay import Replay, replay_requests, run_replay, summarize, tradeoff_curve
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
    summary["tradeoff"] = tradeoff_curve(rp, scales, seed) if scales else []
    summary["provenance"] = provenance(cfg)
    write_json(summary, out / "replay.json")
    print_table(replay_table(summary, rp.k)[1], f"offline replay: {summary['requests']} held-out requests, same seeds")
    replay_page(summary, rp, wanted, out, scores).write(out / "replay.html")
    console.print(f"wrote {out}/replay.json and {out}/replay.html")
    return summary


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


def _image_table(path: Path, what: str):
    """An identity-labelled image CSV (image, identity[, category]) and its image paths."""
    from recsys.data.io import read_csv_with

    try:
        df = read_csv_with(path, ("image", "identity"), what)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    return df, [str(path.parent / p) for p in df["image"]]


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
    res["provenance"] = provenance(cfg)
    write_json(res, out / "personalized_encoder.json")
    personalized_page(res, examples).write(out / "report.html")
    rows = [{"encoder": e["encoder"], "metric": e["metric"], "mean": e["mean"],
             "95% CI": f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]"} for e in res["summary"]["encoders"]]
    print_table(rows, f"personalized representations over {res['identities']} held-out identities")
    print_table([{k: v for k, v in d.items()} for d in res["summary"]["differences"]], "paired differences")
    console.print(f"wrote {out}/report.html")
    return res


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
    rep["provenance"] = provenance()
    write_json(rep, out / "clpips.json")
    print_table([{"distance": k, **rep[k]} for k in ("unfitted", "fitted")],
                f"CLPIPS on {rep['held_out_pairs']} held-out pairs (judged by: {source.split(' (')[0]})")
    return rep


@eval_app.command("autoencoder")
def eval_autoencoder(
    data: Annotated[Path, typer.Option("--data", "-d", help="the world the autoencoder was trained on")],
    autoencoder: Annotated[Path, typer.Option(help="a trained autoencoder directory, or a generator with a vae/")],
    held_out: Annotated[int, typer.Option(help="the last N of the training order (the ones training kept out)")] = 256,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/autoencoder"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> dict:
    """Reconstruction quality of the generator's autoencoder on the renders its training held out:
    PSNR and the identity encoder's cosine between each render and its reconstruction."""
    from eval.autoencoder import evaluate_autoencoder
    from ragar.encoders.registry import build_image_encoder
    from ragar.generation.autoencoder import load_autoencoder, world_renders

    cfg = get_config(config, set_)
    path = autoencoder / "vae" if (autoencoder / "vae" / "config.json").exists() else autoencoder
    if not (path / "config.json").exists():
        raise fail(f"{autoencoder} is not an autoencoder directory (no config.json)")
    if not (data / "views.parquet").exists():
        raise fail(f"{data} is not a world directory (no views.parquet)")
    if held_out < 1:
        raise fail("--held-out must be at least 1")
    vae = load_autoencoder(path)
    # the order training shuffled them in (autoencoder.seed): its last N were held out
    images = world_renders(data, cfg.autoencoder.image_size, seed=cfg.autoencoder.seed)[-held_out:]
    ident = build_image_encoder(cfg.encoder.identity) if cfg.encoder.identity else None
    rep = evaluate_autoencoder(vae, images, ident)
    rep.update(autoencoder=str(path), identity_encoder=cfg.encoder.identity, provenance=provenance(cfg))
    write_json(rep, out / "autoencoder.json")
    row = {"images": rep["images"], "latents": "x".join(map(str, rep["latent_shape"])),
           "PSNR (dB)": rep["psnr"]["mean"], "worst PSNR": rep["psnr"]["min"]}
    if "identity_cos" in rep:
        row |= {"identity cos": rep["identity_cos"]["mean"], "worst identity cos": rep["identity_cos"]["min"]}
    print_table([row], f"autoencoder {path} on {rep['images']} held-out renders")
    return rep
