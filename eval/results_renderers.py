"""How each results JSON renders as markdown: one function per marked block (``TABLES``).

Each takes the JSON the measuring command wrote and returns the table (and the sentences whose
numbers come from the same JSON), ending with the command, commit and date that produced it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _fmt(v, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "—"
    s = f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
    return s.replace("-", "−")


def _ci(ci, digits: int = 3, sign: bool = False) -> str:
    return f"[{_fmt(ci[0], digits, sign)}, {_fmt(ci[1], digits, sign)}]"


def _source(d: dict) -> str:
    p = d.get("provenance") or {}
    commit = f"commit {p['commit'][:7]}" + ("+" if p.get("dirty") else "") if p.get("commit") else "commit not recorded"
    return f"*`{p.get('command', '?')}` ({commit}, {str(p.get('date', '?'))[:10]})*"


def _rows(d: dict, key: str = "method") -> dict[str, dict]:
    return {r[key]: r for r in d["rows"]}


def _diff(d: dict, method: str, versus: str, metric: str) -> dict | None:
    return next((x for x in d.get("differences", []) if (x["method"], x["versus"], x["metric"])
                 == (method, versus, metric)), None)


def _mean(r: dict, k: str):
    v = r.get(k)
    return v["mean"] if isinstance(v, dict) else v


# --- generation ---------------------------------------------------------------------------------

GENERATION_LABELS = {"ragar": "ragar (retrieval-weighted history)", "uniform": "uniform history",
                     "reference-only": "reference only", "ragar + best-of-4": "ragar + best-of-4",
                     "reference unchanged": "the reference, unchanged",
                     "perfect answer (world render)": "the perfect answer: the world renders it in the ideal style"}


def generation_headline(d: dict) -> str:
    """The README's table: RAGAR against its baselines on ``ragar eval generation``."""
    rows = _rows(d)
    out = [f"| on {d['requests']} demo-world requests, same seeds | oracle utility [95% CI] | ideal palette "
           "| parts kept | identity cos |", "|---|---|---|---|---|"]
    for key, name in GENERATION_LABELS.items():
        r = rows.get(key)
        if r is None:
            continue
        u = r["utility"]
        out.append(f"| {name} | {_fmt(u['mean'])} {_ci(u['ci'])} | {_fmt(r['ideal_palette']['mean'])} "
                   f"| {_fmt(r['parts_kept']['mean'])} | {_fmt(r['identity_cos']['mean'])} |")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def generation_full(d: dict) -> str:
    """docs/RESULTS.md: every row of ``ragar eval generation`` with every column."""
    out = ["| method | oracle utility [95% CI] | ideal palette | category kept | parts kept | identity cos (NearID) "
           "| ranker fit |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        u = r["utility"]
        util = f"{_fmt(u['mean'])} {_ci(u['ci'])}" if u.get("ci") else _fmt(u["mean"])
        out.append(f"| {r['method']} | {util} | " + " | ".join(
            _fmt(_mean(r, k)) for k in ("ideal_palette", "category_kept", "parts_kept", "identity_cos",
                                        "ranker_fit")) + " |")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def generation_differences(d: dict) -> str:
    """docs/RESULTS.md: the paired differences of ``ragar eval generation``."""
    metrics = ("utility", "ideal_palette", "parts_kept", "identity_cos")
    out = ["| comparison | oracle utility | ideal palette | parts kept | identity cos |", "|---|---|---|---|---|"]
    pairs = sorted({(x["method"], x["versus"]) for x in d["differences"] if x["method"].startswith("ragar")},
                   key=lambda p: (p[0] != "ragar", p))
    for a, b in pairs:
        cells = []
        for m in metrics:
            x = _diff(d, a, b, m)
            cells.append("—" if x is None else f"{_fmt(x['diff'], sign=True)} {_ci(x['ci'], sign=True)}")
        out.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


# --- preference, rankers ------------------------------------------------------------------------

def preference_table(d: dict) -> str:
    """docs/RESULTS.md: ``ragar eval preference`` (means with 95% bootstrap intervals over pairs)."""
    k = d["k"]
    out = [f"| method | ideal_cos [95% CI] | hr@{k} [95% CI] | ndcg@{k} |", "|---|---|---|---|"]
    for r in d["rows"]:
        out.append(f"| {r['method']} | {_fmt(r['ideal_cos'])} {_ci((r['ideal_cos_lo'], r['ideal_cos_hi']))} "
                   f"| {_fmt(r[f'hr@{k}'])} {_ci((r[f'hr@{k}_lo'], r[f'hr@{k}_hi']))} | {_fmt(r[f'ndcg@{k}'])} |")
    rows = _rows(d)
    ragar, diffs = rows.get("ragar"), []
    for base in ("uniform", "recency", "reference-only"):
        if ragar and base in rows:
            dc, dh = ragar["ideal_cos"] - rows[base]["ideal_cos"], ragar[f"hr@{k}"] - rows[base][f"hr@{k}"]
            diffs.append(f"- ragar − {base}: ideal_cos {_fmt(dc, sign=True)}, hr@{k} {_fmt(dh, sign=True)} "
                         f"(the same {ragar['pairs']} pairs)")
    if diffs:
        out += ["", *diffs]
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


RANKER_LABELS = {"popularity": "popularity (past clicks)", "cosine": "cosine(RAGAR preference, item)",
                 "cosine-uniform": "cosine(uniform mean, item)", "lightgbm": "LightGBM LambdaRank",
                 "lightgbm-uniform": "LightGBM, uniform-history features", "din": "torch ranker (DIN attention)",
                 "din-uniform": "torch ranker, mean-pooled history"}


def ranker_table(d: dict) -> str:
    """docs/RESULTS.md: ``ragar eval ranker`` on the test window, with the oracle Spearman and calibration."""
    k = d["k"]
    out = [f"| model | NDCG@{k} | − cosine [95% CI] | HR@{k} | AUC | GAUC |", "|---|---|---|---|---|---|"]
    for r in d["rows"]:
        vs = "—" if r["model"] == "cosine" else (f"{_fmt(r[f'ndcg@{k}_vs_cosine'], sign=True)} "
                                                 f"{_ci((r['vs_cosine_ci95_lo'], r['vs_cosine_ci95_hi']), sign=True)}")
        out.append(f"| {RANKER_LABELS.get(r['model'], r['model'])} | {_fmt(r[f'ndcg@{k}'])} | {vs} "
                   f"| {_fmt(r[f'hr@{k}'])} | {_fmt(r['auc'])} | {_fmt(r['gauc'])} |")
    sp, cal = d.get("oracle_spearman") or {}, d["calibration"]
    out.append("")
    if sp:
        out.append("Spearman of the torch ranker's score of a held-out item's unseen view with the oracle utility: "
                   + ", ".join(f"{_fmt(v)} ({name})" for name, v in sp.items()) + ".")
    out.append(f"Calibration at the logged slots: mean predicted click probability {_fmt(cal['mean_predicted'])}, "
               f"observed CTR {_fmt(cal['observed_ctr'])}, ECE {_fmt(cal['ece'])}.")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


# --- evaluation suite ---------------------------------------------------------------------------

REPLAY_COLUMNS = {"utility": "oracle utility", "ideal_palette": "ideal palette", "hist_cos": "hist cos ×100",
                  "hr@10": "HR@10", "ndcg@10": "NDCG@10", "sem_cos": "sem cos ×100", "ssim": "SSIM",
                  "clpips": "CLPIPS ↓", "identity_cos": "identity cos", "fpr_ap@100": "FPR AP@100",
                  "parts_kept": "parts kept"}


def replay_table(d: dict) -> str:
    """docs/RESULTS.md: ``ragar eval replay`` means, and RAGAR's paired differences."""
    cols = [c for c in REPLAY_COLUMNS if c in d["rows"][0]]
    out = ["| method | " + " | ".join(REPLAY_COLUMNS[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in d["rows"]:
        out.append(f"| {r['method']} | " + " | ".join(
            _fmt(_mean(r, c), 2 if c in ("hist_cos", "sem_cos") else 3) for c in cols) + " |")
    out.append("")
    for versus in [r["method"] for r in d["rows"] if r["method"] != "ragar"]:
        parts = []
        for m in ("utility", "ideal_palette", "identity_cos", "parts_kept"):
            x = _diff(d, "ragar", versus, m)
            if x is not None:
                parts.append(f"{REPLAY_COLUMNS[m]} {_fmt(x['diff'], sign=True)} {_ci(x['ci'], sign=True)}")
        if parts:
            out.append(f"ragar − {versus} ({d['requests']} requests, paired): " + "; ".join(parts) + ".")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def clpips_table(d: dict) -> str:
    """docs/RESULTS.md: ``ragar eval clpips`` on the held-out ranked pairs."""
    out = ["| distance | 2AFC | Spearman ρ | ICC(2,1) |", "|---|---|---|---|"]
    for name, key in (("unfitted (every layer weight 1)", "unfitted"), ("fitted", "fitted")):
        r = d[key]
        out.append(f"| {name} | {_fmt(r['2afc'])} | {_fmt(r['spearman'])} | {_fmt(r['icc'])} |")
    out += ["", f"{d['train_pairs']} pairs for fitting, {d['held_out_pairs']} held out (split by reference "
            "identity); fitted layer weights " + ", ".join(_fmt(w) for w in d["weights"]) + "."]
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


ENCODER_LABELS = {"base": "base EfficientNet-Lite0", "real-only": "LoRA on the 3 real images alone",
                  "personalized": "personalized LoRA"}


def personalized_encoder_table(d: dict) -> str:
    """docs/RESULTS.md, docs/PERSONALIZED_ENCODER.md: ``ragar eval personalized-encoder``."""
    s = d["summary"]
    enc = {(r["encoder"], r["metric"]): r for r in s["encoders"]}
    out = ["| encoder | retrieval NDCG [95% CI] | classification PR-AUC [95% CI] |", "|---|---|---|"]
    for e, name in ENCODER_LABELS.items():
        cells = [f"{_fmt(enc[(e, m)]['mean'])} {_ci((enc[(e, m)]['ci_low'], enc[(e, m)]['ci_high']))}"
                 for m in ("ndcg", "pr_auc")]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    for r in s["differences"]:
        out.append(f"- {r['comparison']}, {r['metric']}: {_fmt(r['mean'], sign=True)} "
                   f"{_ci((r['ci_low'], r['ci_high']), sign=True)} ({r['relative'] * 100:+.0f} % relative; "
                   f"better on {r['wins']} of {r['identities']} identities)")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


# --- benchmarks ----------------------------------------------------------------------------------

def _quantity(v: float | None, unit: str) -> str:
    """3 significant digits, thousands grouped (14,860 and 0.641); seconds and sizes keep their unit."""
    if v is None:
        return ""
    if v == 0:
        text = "0"
    elif abs(v) >= 1000:
        text = f"{float(f'{v:.4g}'):,.0f}"
    else:
        text = f"{float(f'{v:.3g}'):g}"
    return f"{text} {unit}" if unit in ("s", "GiB", "MiB") else text


def bench_table(d: dict) -> str:
    """docs/BENCHMARKS.md: one suite of ``python -m benchmarks.run`` (``benchmarks/results/<suite>.json``)."""
    out = ["| metric | value | baseline | baseline value | ratio |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}×"
        out.append(f"| {r['metric']} | {_quantity(r['value'], r['unit'])} | {r.get('baseline') or ''} | "
                   f"{_quantity(r.get('baseline_value'), r['unit'])} | {ratio} |")
    m = d["machine"]
    where = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)" + \
        (", CUDA" if m.get("cuda") else ", no GPU")
    return "\n".join(out) + "\n\n" + _source(d) + f" — {where}\n"


def _bench_row(d: dict, prefix: str) -> dict:
    """The row of a suite JSON whose metric starts with ``prefix``."""
    try:
        return next(r for r in d["rows"] if r["metric"].startswith(prefix))
    except StopIteration:
        raise KeyError(f"no row {prefix!r} in suite {d.get('suite')}") from None


def _suite(ds: dict, name: str) -> dict:
    return ds[f"benchmarks/results/{name}.json"]


def _bench_dates(ds: dict) -> str:
    return ", ".join(f"{Path(k).stem} {str(v['provenance']['date'])[:10]}" for k, v in ds.items())


def request_costs(ds: dict) -> str:
    """docs/SCALING.md: what each part of a request costs, gathered from the bench suites' JSON."""
    pref = _bench_row(_suite(ds, "preference"), "users/s")
    idx = _suite(ds, "index")
    hq, hr = _bench_row(idx, "hnsw queries/s"), _bench_row(idx, "hnsw recall@10")
    din = _bench_row(_suite(ds, "ranking"), "din scoring rows/s")
    gen = _suite(ds, "generation")
    rr, b8 = _bench_row(gen, "retrieval + ranking"), _bench_row(gen, "images/s at batch 8")
    share = rr["value"] / (rr["value"] + rr["baseline_value"])
    srv = _suite(ds, "serving")
    rps, p50 = _bench_row(srv, "requests/s"), _bench_row(srv, "p50 latency")
    so = _bench_row(_suite(ds, "scaleout"), "users/s, 2 processes")
    out = ["| part of a request | cost here | what it scales with |", "|---|---|---|",
           f"| retrieval-weighted preference (history of 200, 512-d) | {_quantity(pref['value'], '')} users/s batched "
           f"({1e6 / pref['value']:.0f} µs a user) | users × history × dims; precomputable |",
           f"| catalog search, faiss HNSW over 1M × 128 | {_quantity(hq['value'], '')} queries/s at recall@10 "
           f"{hr['value']:.3f} | log(catalog) per query |",
           f"| ranking a best-of-8 batch with the torch ranker | {_quantity(din['value'], '')} rows/s | "
           "candidates × history |",
           f"| retrieval + ranking of one best-of-8 request | {rr['value']:.2f} s, **{share * 100:.1f} %** of the "
           "request | |",
           f"| generation, the shipped generator, 25 DDIM steps | {b8['value']:.2f} images/s at batch 8, "
           f"{b8['baseline_value']:.2f} at batch 1 | steps × latent pixels × batch |",
           f"| the API under load (32 clients, micro-batching, 1 image a request) | {rps['value']:.2f} requests/s, "
           f"p50 {p50['value']:.1f} s | the generator |",
           f"| `generate-batch` on the large world, 1 image a user | {so['value']:.2f} users/s on "
           f"{_setups(so)[1]} vs {so['baseline_value']:.2f} on {_setups(so)[0]} "
           f"(**{so['ratio']:.2f}×**) | "
           "processes × devices |", "",
           f"Generation is about {100 - share * 100:.0f}% of a request.", "",
           f"*Measured by `python -m benchmarks.run` ({_bench_dates(ds)}).*"]
    return "\n".join(out) + "\n"


def _setups(row: dict) -> tuple[str, str]:
    """A scale-out row's (baseline, measured) set-ups as the docs print them, "1 process × 2 threads"
    and "2 processes × 1 thread": the bench writes the thread counts of the machine it ran on."""
    one, two = row["baseline"], row["metric"].split(", ", 1)[1]
    return one.replace(" x ", " × "), two.replace(" x ", " × ")


def scaleout_table(d: dict) -> str:
    """docs/SCALING.md: ``generate-batch`` on 1 process against 2 (``benchmarks/results/scaleout.json``)."""
    window, e2e = _bench_row(d, "users/s, 2 processes"), _bench_row(d, "users/s end to end")
    rss = _bench_row(d, "peak RSS")
    out = ["| | {} | {} | ratio |".format(*_setups(window)),
           "|---|---|---|---|",
           f"| users/s over the generation window | {window['baseline_value']:.2f} | {window['value']:.2f} | "
           f"**{window['ratio']:.2f}×** |",
           "| users/s end to end (start-up included: the 5.7M-row log, the cached catalog, the models) | "
           f"{e2e['baseline_value']:.2f} | {e2e['value']:.2f} | {e2e['ratio']:.2f}× |",
           f"| peak RSS of the largest process | {rss['baseline_value']:.2f} GiB | {rss['value']:.2f} GiB | |"]
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def serving_load_table(d: dict) -> str:
    """docs/SERVING.md: micro-batching against batch size 1 under the same load
    (``benchmarks/results/serving-load.json``, written by the serving bench)."""
    out = ["| | requests/s | p50 | p95 | p99 | mean batch | 429 / 503 | errors other than 429/503 | "
           "generator work after the last client left |", "|---|---|---|---|---|---|---|---|---|"]
    for key, name in (("batched", "micro-batching (max 8, 25 ms)"), ("batch_1", "batch size 1")):
        r = d[key]
        out.append(f"| {name} | {r['throughput_rps']:.2f} | {r['p50_s']:.1f} s | {r['p95_s']:.1f} s | "
                   f"{r['p99_s']:.1f} s | {r['mean_batch_size']:.1f} | {r['rejected_429']} / {r['rejected_503']} | "
                   f"{sum(r['errors'].values())} | {r['generator_tail_s'] or 0:.0f} s |")
    b, one = d["batched"], d["batch_1"]
    out.append("")
    out.append(f"Micro-batching serves **{b['throughput_rps'] / one['throughput_rps']:.1f}×** the requests of "
               f"batch size 1 ({d['where']}, {d['steps']} steps, {b['clients']} clients).")
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def ab_simulation_table(d: dict) -> str:
    """docs/SERVING.md: ``ragar ab simulate``'s report (clicks per exposure, the first treatment arm
    against the control, four ways), and the run's guardrails, rates and oracle utility."""
    arm = next(a for a in d["arms"] if a["arm"] != d["control"])
    ctl = next(a for a in d["arms"] if a["arm"] == d["control"])
    ul = {r["metric"]: r for r in d["user_level"] if r["arm"] == arm["arm"]}
    c, lk = ul["click"], ul["like"]
    sim = d["simulation"]
    g = {x["arm"]: x for x in d["guardrails"]}
    util = {x["arm"]: x["mean_oracle_utility"] for x in d["oracle_utility"]}
    ci, p3 = lambda v: _ci(v, sign=True), lambda v: f"{v:.2g}" if v < 0.001 else f"{v:.4f}".rstrip("0")
    breaches = sum(len(x["breaches"]) for x in d["guardrails"])
    out = [f"It ran {sim['days_run']} of {sim['days_planned']} simulated days in {sim['wall_minutes']:.0f} min: "
           f"{d['total_exposures']:,} exposures from {sum(a['users'] for a in d['arms'])} users; "
           f"{'a' if d['srm_detected'] else 'no'} sample-ratio mismatch (χ² = {d['srm_chi2']:.2f}, "
           f"p = {d['srm_p_value']:.2f}); {breaches or 'no'} guardrail breach{'es' if breaches != 1 else ''} "
           f"(errors {g[arm['arm']]['errors']} and {g[d['control']]['errors']}, p95 latency "
           f"{g[arm['arm']]['p95_latency_s']:.1f} and {g[d['control']]['p95_latency_s']:.1f} s, identity "
           f"{g[arm['arm']]['identity']:.3f} and {g[d['control']]['identity']:.3f}). Decision: "
           f"{d['decision'][arm['arm']]}.", "",
           f"| clicks per exposure, {arm['arm']} − {d['control']} | estimate | 95% interval | p |", "|---|---|---|---|",
           f"| users as units (delta method) | {_fmt(c['diff'], sign=True)} | {ci(c['ci95'])} | {p3(c['p_value'])} |",
           f"| users, CUPED (variance {_fmt(-c['variance_reduction'] * 100, 1, sign=True)}%) | "
           f"{_fmt(c['cuped_diff'], sign=True)} | {ci(c['cuped_ci95'])} | {p3(c['cuped_p_value'])} |",
           f"| users, CUPED, **always-valid** (mixture SPRT, τ = {d['sequential_tau']:g}) | "
           f"{_fmt(c['cuped_diff'], sign=True)} | **{ci(c['seq_ci95'])}** | {p3(c['seq_p_value'])} |",
           f"| exposures as units (secondary view) | {_fmt(arm['click_lift_abs'], sign=True)} | "
           f"{ci(arm['click_lift_abs_ci95'])} | {p3(arm['click_p_value'])} |", "",
           f"Click rate {arm['click_rate']:.3f} against {ctl['click_rate']:.3f}; like rate {arm['like_rate']:.3f} "
           f"against {ctl['like_rate']:.3f} (always-valid interval on likes {ci(lk['seq_ci95'])}). Mean oracle "
           f"utility of the chosen image {util[arm['arm']]:.3f} against {util[d['control']]:.3f}."]
    return "\n".join(out) + "\n\n" + _source(d) + "\n"


def like_weight_table(d: dict) -> str:
    """docs/RESULTS.md: ``scripts/like_weight_sweep.py`` (how the preference's like weight was chosen)."""
    out = ["| like weight (click = 1) | weight on the ideal palette | heaviest palette is the ideal one "
           "| weighted oracle utility | weight on the reference's category |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        name = r.get("method") or f"{r['like_weight']:g}" + (" (default)" if r["like_weight"] ==
                                                               d["default_like_weight"] else "")
        out.append(f"| {name} | {_fmt(r['mass_on_ideal_palette'])} | {_fmt(r['heaviest_palette_is_ideal'])} | "
                   f"{_fmt(r['weighted_utility'])} | {_fmt(r['mass_on_reference_category'])} |")
    return "\n".join(out) + f"\n\n{d['requests']} demo-world requests drawn with seed {d['seed']}. {_source(d)}\n"


RANK_ROW, ABLATION_ROW = "ragar + rank task", "ragar, same fine-tuning without rank task"


def rank_task_table(d: dict) -> str:
    """docs/GENERATION.md: the rank task against its ablation (``ragar eval generation
    --rank-generator --ablation-generator``): both rows, and their paired differences per request
    (the evaluation's own paired bootstrap, seed 0, over its recorded per-request values)."""
    from eval.metrics.intervals import paired_bootstrap_ci

    rows = _rows(d)
    cols = ("utility", "ideal_palette", "category_kept", "parts_kept", "identity_cos")
    out = ["| | oracle utility | ideal palette | category kept | parts kept | identity cos (NearID) |",
           "|---|---|---|---|---|---|"]
    for name in ("ragar", ABLATION_ROW, RANK_ROW):
        out.append(f"| {name} | " + " | ".join(_fmt(_mean(rows[name], k)) for k in cols) + " |")
    per = d["per_request"]
    cells = []
    for k in cols:
        m, lo, hi = paired_bootstrap_ci(per[RANK_ROW][k], per[ABLATION_ROW][k], seed=0)
        cells.append(f"{_fmt(m, sign=True)} {_ci((lo, hi), sign=True)}")
    out.append("| rank task − ablation (paired) | " + " | ".join(cells) + " |")
    return "\n".join(out) + f"\n\n{d['requests']} requests, same seeds. {_source(d)}\n"


def replay_tradeoff(d: dict) -> str:
    """docs/EVALUATION.md, docs/RESULTS.md: the replay's trade-off curve (``replay.json``'s
    ``tradeoff``) as one sentence under its plot."""
    t = d["tradeoff"]
    util = ", ".join(f"{r['utility']:.2f} at scale {r['preference_guidance_scale']:g}" for r in t)
    ident = [r["identity_cos"] for r in t]
    return (f"Oracle utility {util}; identity cos between {min(ident):.3f} and {max(ident):.3f} "
            f"throughout. {_source(d)}\n")


#: the stages of a release whose provenance.json does not list them (the five-stage recipe's, written
#: by hand): (key in provenance.json, what the stage trains). scripts/release_generator.py writes a
#: ``stages`` list of ``{"key", "what"}`` instead, in the order its recipe ran them
GENERATOR_STAGES = (("autoencoder", "the autoencoder, 64 px to 32x32x4 latents, from scratch"),
                    ("autoencoder_decoder_stage", "its decoder again, with latent noise (encoder frozen)"),
                    ("generator_epsilon_stage", "the latent UNet on aligned pairs, ε-prediction"),
                    ("generator_v_stage", "the same UNet fine-tuned to v-prediction from stage 3's EMA"),
                    ("autoencoder_ssim_stage", "the decoder once more with 1 − SSIM (encoder frozen); shipped"))


def training_stages(d: dict) -> str:
    """docs/GENERATION.md: the shipped generator's training stages, from the ``provenance.json``
    released beside its weights (steps, losses and wall time as each stage's run recorded them)."""
    out = ["| stage | what | steps | loss, first → final | wall time |", "|---|---|---|---|---|"]
    total = 0.0
    stages = [(s["key"], s["what"]) for s in d["stages"]] if "stages" in d else GENERATOR_STAGES
    for i, (key, what) in enumerate(stages, 1):
        st = d.get(key)
        if st is None:
            continue
        sec = st.get("seconds", st.get("seconds_this_run"))
        total += sec or 0.0
        wall = f"{sec / 60:.0f} min" if sec else "not recorded (stopped at a checkpoint)"
        out.append(f"| {i} | {what} | {st['steps']:,} | {_fmt(st.get('first_loss'))} → "
                   f"{_fmt(st.get('final_loss'))} | {wall} |")
    gpu = d.get("device", "?")
    return "\n".join(out) + (f"\n\nThe stages that recorded their time took {total / 60:.0f} min in all, "
                             f"on {gpu}.{_vae_quality(d.get('autoencoder_eval'))} *Source: "
                             "`ragar/weights/demo-generator/provenance.json`, written when the weights were "
                             "released; its `trained_by` lists the commands.*\n")


def _vae_quality(ev: dict | None) -> str:
    """The released vae's reconstructions of the renders its training held out (``ragar eval
    autoencoder``), when the release recorded them: what every generated image passes through."""
    if not ev:
        return ""
    c, s, _ = ev["latent_shape"]
    p = ev["psnr"]
    text = (f" The released vae ({s}x{s}x{c} latents) reconstructs the {ev['images']:,} held-out renders at "
            f"{p['mean']:.2f} dB PSNR [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}] (worst {p['min']:.2f})")
    if "identity_cos" in ev:
        i = ev["identity_cos"]
        text += f", NearID identity cos {i['mean']:.3f} [{i['ci'][0]:.3f}, {i['ci'][1]:.3f}] (worst {i['min']:.3f})"
    return text + "."


TABLES: dict[str, Callable[[dict], str]] = {
    "generation_headline": generation_headline, "generation_full": generation_full,
    "generation_differences": generation_differences, "preference_table": preference_table,
    "ranker_table": ranker_table, "replay_table": replay_table, "clpips_table": clpips_table,
    "personalized_encoder_table": personalized_encoder_table, "bench_table": bench_table,
    "serving_load_table": serving_load_table, "ab_simulation_table": ab_simulation_table,
    "request_costs": request_costs, "scaleout_table": scaleout_table,
    "training_stages": training_stages,
    "like_weight_table": like_weight_table, "rank_task_table": rank_task_table,
    "replay_tradeoff": replay_tradeoff,
}
