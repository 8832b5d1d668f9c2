"""Tables of the measurements that chose a design or check a budget, rather than measure the shipped
product's quality: the world's sizes (docs/WORLD.md), the UNet variants' training speed
(docs/GENERATION.md), the guidance sweep (docs/GENERATION.md), the NearID ablation
(docs/EVALUATION.md), the LoRA sweep (docs/PERSONALIZED_ENCODER.md), the large world's memory
(docs/SCALING.md). Each is rendered from the JSON its script writes, with the command, commit and
date that produced it, like every other table (:mod:`eval.results_tables`)."""

from __future__ import annotations

import re
from collections.abc import Callable

from eval.results_renderers import _ci, _fmt, _source


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def world_sizes_table(d: dict) -> str:
    """docs/WORLD.md: ``scripts/world_sizes.py`` (what each named size holds and costs to build)."""
    out = ["| size | items | renders (views + distractors) | users | interactions | `ragar world build`, wall "
           "| peak RSS, largest process |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| `{r['size']}` | {r['items']:,} | {r['views']:,} + {r['distractors']:,} | {r['users']:,} "
                   f"| {r['interactions']:,} | {_duration(r['seconds'])} | {r['peak_rss_gib']:.2f} GiB |")
    return "\n".join(out) + f"\n\nOn {d.get('cpu_count', '?')} CPU cores. {_source(d)}\n"


def unet_speed_table(d: dict) -> str:
    """docs/GENERATION.md: ``python -m benchmarks.generator_training_speed`` (one training step of
    each UNet variant at the shipped shape)."""
    shape = d["shape"]
    c, h, w = shape["latents"]
    out = ["| variant | params | steps/s, 1 thread | steps/s, 2 threads |", "|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['variant']} | {r['params_M']:.2f} M | {_fmt(r['steps_per_s_1'])} | "
                   f"{_fmt(r['steps_per_s_2'])} |")
    first, last = d["rows"][0], d["rows"][-1]
    ratio = last["steps_per_s_2"] / first["steps_per_s_2"]
    return ("\n".join(out) + f"\n\nBatch {shape['batch_size']} of {h}x{w}x{c} latents with the reference's "
            f"latents concatenated; at 2 threads the last variant trains {ratio:.1f}× as many steps a second as the "
            f"first. "
            f"{_source(d)}\n")


BACKBONE_LABELS = {"backbone (pooled features)": "the backbone alone, its head conv pooled",
                   "backbone (pooled, every level)": "the backbone alone, every level pooled and concatenated"}


def nearid_ablation_table(d: dict) -> str:
    """docs/EVALUATION.md: ``scripts/nearid_ablation.py`` (what the NearID head reads and is trained on)."""
    names = {"head": "the 4x4 head conv", "block10,block14,head": "blocks 10, 14 and the head conv"}
    out = ["| head reads | trained on | held-out SSR |", "|---|---|---|"]
    for r in d["rows"]:
        if not r["head"]:
            name = r["run"].removeprefix("backbone: ")
            out.append(f"| — ({BACKBONE_LABELS.get(name, name)}) | — | {_fmt(r['ssr'])} |")
            continue
        data = (f"+ every identity of a second world (seed 101): {r['training_identities']:,} in all"
                if r["second_world"] else f"the demo world's {r['training_identities']:,} training identities")
        cells = [names.get(r["levels"], r["levels"]), data, _fmt(r["ssr"])]
        if r["run"] == "shipped":
            cells = [f"**{c}**" for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return (("\n".join(out)) + f"\n\n{d['triplets']} triplets from {d['held_out_identities']} held-out "
            f"identities; {d['steps']:,} steps, seed {d['seed']}, in each run. {_source(d)}\n")


def lora_sweep_table(d: dict) -> str:
    """docs/PERSONALIZED_ENCODER.md: ``scripts/lora_sweep.py`` (the LoRA settings the defaults were
    chosen from, means over the first identities)."""
    out = ["| LoRA setting | positives | NDCG | PR-AUC |", "|---|---|---|---|"]
    for r in d["rows"]:
        cells = [r["setting"], r["positives"] or "—", _fmt(r["ndcg"]), _fmt(r["pr_auc"])]
        if r.get("default"):
            cells = [f"**{c}**" for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + f"\n\nMeans over the first {d['identities']} held-out identities. {_source(d)}\n"


def guidance_sweep_table(d: dict) -> str:
    """docs/GENERATION.md: ``scripts/guidance_sweep.py`` (RAGAR's row at each pair of guidance scales,
    the perfect answer as the ceiling, differences paired per request against the shipped scales)."""
    perfect = d["rows"][0]
    ceiling = perfect["identity_cos"]["mean"]
    diffs = {(x["method"], x["metric"]): x for x in d["differences"]}
    out = ["| guidance (reference, preference) | NearID cos (of the perfect answer's) | parts kept | category kept "
           "| oracle utility | ideal palette | NearID cos, paired | ideal palette, paired |", "|---|" + "---|" * 7]
    for i, r in enumerate(d["rows"]):
        name = "perfect answer (world render)" if r["scales"] is None else "({:g}, {:g})".format(*r["scales"])
        cells = [name, f"{_fmt(r['identity_cos']['mean'])} ({r['identity_cos']['mean'] / ceiling:.0%})",
                 *(_fmt(r[k]["mean"]) for k in ("parts_kept", "category_kept", "utility", "ideal_palette"))]
        for k in ("identity_cos", "ideal_palette"):
            x = diffs.get((r["method"], k))
            cells.append("—" if x is None else f"{_fmt(x['diff'], sign=True)} {_ci((x['lo'], x['hi']), sign=True)}")
        if i == 1:  # the shipped scales, which the others are paired with
            cells = [f"**{c}**" if c != "—" else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + (f"\n\nMeans over the first {d['requests']} requests of the generation comparison (same "
                             f"seeds); paired: against the shipped scales, 95% bootstrap. {_source(d)}\n")


def large_world_memory_table(ds: dict) -> str:
    """docs/SCALING.md: ``scripts/large_world_memory.py``'s steps and the scale-out suite's
    ``generate-batch`` rows (``benchmarks/results/scaleout.json``) against the memory budget."""
    mem = next(d for d in ds.values() if "budget_gib" in d)
    scale = next(d for d in ds.values() if d.get("suite") == "scaleout")
    budget = mem["budget_gib"]
    labels = {"world build": "`ragar world build --size large`",
              "ranker features": "ranker features for the {impressions:,} test-window impressions "
                                 "(`benchmarks/large_world_features.py`)",
              "replay": "`ragar eval replay --config large --requests 200 --no-gallery` (3 methods, first run: "
                        "embeds the 100k catalog images and titles)"}
    out = ["| step on the large world | wall | peak RSS, largest process | budget |", "|---|---|---|---|"]
    for r in mem["rows"]:
        wall = _duration(r["seconds"])
        if r["step"] == "ranker features":
            wall = f"{_duration(r['features_s'])} (+{_duration(r['embed_s'])} catalog embedding)"
        out.append(f"| {labels[r['step']].format(**r)} | {wall} | {r['peak_rss_gib']:.2f} GiB | {budget} GiB |")
    rows = {r["metric"]: r for r in scale["rows"]}
    e2e, rss = rows["users/s end to end, 2 processes"], rows["peak RSS of the largest process, 2 processes"]
    users = int(re.search(r"(\d+) users", scale["rows"][0]["bench"])[1])  # "generate-batch (large world, 192 users)"
    out.append(f"| `ragar generate-batch` on {users} users, 1 process (scale-out suite) | "
               f"{_duration(users / e2e['baseline_value'])} | {rss['baseline_value']:.2f} GiB | {budget} GiB |")
    out.append(f"| the same, 2 processes under `accelerate launch` | {_duration(users / e2e['value'])} | "
               f"{rss['value']:.2f} GiB each | {budget} GiB a process |")
    return "\n".join(out) + f"\n\n{_source(mem)}; {_source(scale)}\n"


DESIGN_TABLES: dict[str, Callable[[dict], str]] = {
    "world_sizes_table": world_sizes_table, "unet_speed_table": unet_speed_table,
    "nearid_ablation_table": nearid_ablation_table, "lora_sweep_table": lora_sweep_table,
    "large_world_memory_table": large_world_memory_table, "guidance_sweep_table": guidance_sweep_table,
}
