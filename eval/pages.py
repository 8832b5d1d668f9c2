"""The HTML pages of the commands: each builder takes what a command computed and returns an
:class:`~eval.report.HtmlReport` (tables, figures, image grids) that the command writes.

They read results and draw; none of them computes a metric (the evaluations are beside them in
:mod:`eval`), so a page never disagrees with the JSON written next to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ragar.config import RagarConfig
from recsys.data.images import load_rgb


def data_stats_page(root: Path, stats: dict, hist: list[int]):
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


def preference_page(world, ids, res: dict, cfg: RagarConfig):
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
        ax.bar(names, [r[key] for r in res["rows"]], yerr=[[r[key] - r[f"{key}_lo"] for r in res["rows"]],
                                                          [r[f"{key}_hi"] - r[key] for r in res["rows"]]],
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
    sheet.paste(Image.fromarray(load_rgb(world.root / paths[ref_id], size=cell)), (6, 6))
    d.text((6, cell + 10), "reference", fill=(0, 0, 200))
    for j, slot in enumerate(order):
        item = h.item_ids[i][slot]
        x = 6 + (j + 1) * (cell + 6)
        sheet.paste(Image.fromarray(load_rgb(world.root / paths[item], size=cell)), (x, 6))
        d.text((x, cell + 10), f"w={ex['weights'][i][slot]:.2f}", fill=(0, 0, 0))
        d.text((x, cell + 24), f"s={ex['similarity'][i][slot]:.2f}", fill=(90, 90, 90))
    rep.heading("Example: the weights of one user's history")
    rep.image(sheet, f"user {pairs.user_ids[i]}, reference {ref_id}: history items by RAGAR weight w "
              f"(s = cosine to the reference); {int(h.lengths()[i])} items in the history")
    return rep


def ranker_page(res: dict):
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


def batch_page(merged, summary: dict, p, out: Path, show: int = 32):
    """The first users' images with their scores, and the score distributions, as one page."""
    import matplotlib.pyplot as plt

    from eval.report import HtmlReport

    rep = HtmlReport(f"generate-batch: {summary['rows']} rows ({summary['method']}, n={summary['n']})")
    rep.paragraph(f"{summary['users']} users on {summary['processes']} process(es); fallbacks: "
                  f"{summary['fallbacks'] or 'none'}. Every row is in merged.parquet; images under images/.")
    refs = merged["reference_item_id"].unique().sort().to_list()[:8]
    rep.heading("References").gallery([(load_rgb(p.reference_images[r]), r)
                                       for r in refs])
    head = merged.head(show)
    rep.heading(f"The first {head.height} rows")
    rep.gallery([(load_rgb(out / img), f"{u} fit={f:.3f} id={i:.3f}")
                 for u, img, f, i in head.select("user_id", "image", "preference_fit", "identity").iter_rows()])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, col in zip(axes, ("preference_fit", "identity"), strict=True):
        v = merged[col].to_numpy()
        ax.hist(v[~np.isnan(v)], bins=30)
        ax.set_title(col)
    fig.tight_layout()
    rep.figure(fig, "the chosen candidate's scores over all rows")
    return rep


def generation_tables(res: dict) -> tuple[list[dict], list[dict]]:
    """(means per method, paired differences) of ``eval generation``: printed and on the page."""
    cols = ["utility", "ideal_palette", "category_kept", "parts_kept", "identity_cos", "ranker_fit"]
    table = [{"method": r["method"], **{k: (r[k]["mean"] if r.get(k) else float("nan")) for k in cols}}
             for r in res["rows"]]
    diffs = [{"method": d["method"], "vs": d["versus"], "metric": d["metric"], "diff": d["diff"],
              "95% CI": f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"} for d in res["differences"]
             if d["metric"] in ("utility", "parts_kept")]
    return table, diffs


def generation_page(res: dict, images: dict, world, personalizer, reqs, out: Path):
    """The page of ``eval generation``; also saves its two grids as PNGs under ``out`` (the docs
    show them)."""
    import matplotlib.pyplot as plt
    import polars as pl
    from PIL import Image

    from eval.generation import identity_grid
    from eval.report import HtmlReport

    table, diffs = generation_tables(res)
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
    ref_imgs = [load_rgb(personalizer.reference_images[i], size=size[::-1])
                for i in reqs["reference_item_id"][:k]]
    def at_size(imgs: np.ndarray) -> np.ndarray:  # rows rendered at another size (the perfect answer) are resized
        return np.concatenate([im if im.shape[:2] == size else load_rgb(im, size=size[::-1]) for im in imgs[:k]], 1)

    grid = np.concatenate([np.concatenate(ref_imgs, 1)] + [at_size(images[n]) for n in names], 0)
    zoom = np.ones((max(1, round(128 / size[0])),) * 2 + (1,), np.uint8)  # about 128 px a picture, whole pixels
    rep.image(np.kron(grid, zoom),
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
    Image.fromarray(np.kron(strip, zoom)).save(out / "one_reference_many_users.png")
    Image.fromarray(np.kron(grid, zoom)).save(out / "methods_grid.png")
    return rep


def replay_table(summary: dict, k: int) -> tuple[list[str], list[dict]]:
    """(metric keys, means per method) of ``eval replay``: printed and on the page."""
    keys = [m for m in ("utility", "ideal_palette", "hist_cos", "ranker_fit", f"hr@{k}", f"ndcg@{k}",
                        "sem_cos", "ssim", "clpips", "identity_cos", "parts_kept") if m in summary["metrics"]]
    return keys, [{"method": r["method"], **{m: (r[m]["mean"] if r.get(m) else float("nan")) for m in keys}}
                  for r in summary["rows"]]


def tradeoff_figure(tradeoff: list[dict]):
    """Personalization and consistency against the preference guidance scale, each on its own
    axis over its whole natural range (consistency on [0, 1]), so a flat line reads as flat."""
    import matplotlib.pyplot as plt

    x = [r["preference_guidance_scale"] for r in tradeoff]
    y = "utility" if "utility" in tradeoff[0] else "hist_cos"
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.plot(x, [r[y] for r in tradeoff], "o-", color="#c33")
    a.set_ylabel(f"personalization: {y}")
    b.plot(x, [r["identity_cos"] for r in tradeoff], "o-", color="#47a")
    b.set_ylim(0, 1)
    b.set_ylabel("consistency: identity cos to the reference")
    for ax in (a, b):
        ax.set_xlabel("preference guidance scale")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def replay_page(summary: dict, rp, methods: list[str], out: Path, scores):
    """The page of ``eval replay``: tables, bars, the trade-off curve, and the images the replay
    chose for the first requests (saves replay_bars.png and tradeoff.png under ``out``)."""
    import matplotlib.pyplot as plt

    from eval.replay import chosen_images
    from eval.report import HtmlReport

    keys, table = replay_table(summary, rp.k)
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
        fig = tradeoff_figure(summary["tradeoff"])
        fig.savefig(out / "tradeoff.png", dpi=110, bbox_inches="tight")
        rep.figure(fig, "RAGAR's personalization-consistency trade-off over the preference guidance scale")
    # image grid: the first requests, every method (the images the replay chose, not regenerated)
    k = min(8, rp.requests.height)
    rows = rp.requests[:k]
    idx = rows["request_idx"].to_list()
    shown = [chosen_images(scores, m, idx) for m in methods]
    size = shown[0].shape[1]
    grid = [np.concatenate([load_rgb(rp.p.reference_images[i], size=size) for i in rows["reference_item_id"]], 1)]
    grid += [np.concatenate(list(imgs), 1) for imgs in shown]
    rep.image(np.kron(np.concatenate(grid, 0), np.ones((3, 3, 1), np.uint8)),
              "rows: the reference, then " + ", ".join(methods) + "; columns: requests (same seed per column)")
    return rep


def personalized_page(res: dict, examples: dict):
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
    return rep
