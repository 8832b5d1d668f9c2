"""The renderers that turn a results JSON into the markdown the docs show (eval/results_renderers.py)."""

from eval.results_renderers import ab_simulation_table, serving_load_table

PROV = {"command": "ragar ab simulate --users 300", "commit": "0123456789abcdef" * 2 + "01234567", "dirty": False,
        "date": "2026-11-28T00:00:00+00:00"}


def _load(rps: float, p50: float, batch: float, r429: int, errors: dict) -> dict:
    return {"throughput_rps": rps, "p50_s": p50, "p95_s": p50 + 1, "p99_s": p50 + 1.04, "mean_batch_size": batch,
            "rejected_429": r429, "rejected_503": 0, "errors": errors, "generator_tail_s": 0.0, "clients": 32}


def test_the_serving_table_shows_both_runs_and_their_ratio():
    d = {"where": "demo world", "steps": 25, "provenance": PROV,
         "batched": _load(0.9, 20.0, 7.6, 400, {}), "batch_1": _load(0.45, 30.0, 1.0, 800, {"500": 2})}
    t = serving_load_table(d)
    assert "| micro-batching (max 8, 25 ms) | 0.90 | 20.0 s | 21.0 s | 21.0 s | 7.6 | 400 / 0 | 0 | 0 s |" in t
    assert "| batch size 1 | 0.45 | 30.0 s | 31.0 s | 31.0 s | 1.0 | 800 / 0 | 2 | 0 s |" in t
    assert "**2.0×**" in t and "commit 0123456" in t


def _arm(name, users, click, like, lift=None):
    return {"arm": name, "users": users, "exposures": 2 * users, "click_rate": click, "like_rate": like,
            "click_lift_abs": lift, "click_lift_abs_ci95": None if lift is None else [lift - 0.05, lift + 0.05],
            "click_p_value": None if lift is None else 0.00003}


def test_the_ab_table_reads_the_treatment_arm_against_the_control():
    user = {"arm": "ragar", "diff": 0.1, "ci95": [0.05, 0.15], "p_value": 0.0002, "cuped_diff": 0.11,
            "cuped_ci95": [0.06, 0.16], "cuped_p_value": 0.0001, "variance_reduction": 0.02,
            "seq_ci95": [-0.01, 0.21], "seq_p_value": 0.08}
    d = {"experiment": "ragar-vs-uniform", "control": "uniform", "total_exposures": 1708,
         "arms": [_arm("uniform", 150, 0.366, 0.072), _arm("ragar", 147, 0.465, 0.137, 0.099)],
         "srm_chi2": 1.03, "srm_p_value": 0.31, "srm_detected": False, "sequential_tau": 0.02,
         "user_level": [user | {"metric": "click"}, user | {"metric": "like", "seq_ci95": [0.007, 0.125]}],
         "guardrails": [{"arm": a, "errors": 0, "p95_latency_s": 19.5, "identity": 0.64, "breaches": []}
                        for a in ("uniform", "ragar")],
         "decision": {"ragar": "no decision yet"},
         "oracle_utility": [{"arm": a, "mean_oracle_utility": u} for a, u in (("ragar", 1.12), ("uniform", 0.8))],
         "simulation": {"days_run": 7, "days_planned": 12, "wall_minutes": 48.4}, "provenance": PROV}
    t = ab_simulation_table(d)
    assert "It ran 7 of 12 simulated days in 48 min: 1,708 exposures from 297 users" in t
    assert "| users as units (delta method) | +0.100 | [+0.050, +0.150] | 0.0002 |" in t
    assert "| users, CUPED (variance −2.0%) | +0.110 | [+0.060, +0.160] | 0.0001 |" in t
    assert "**[−0.010, +0.210]** | 0.08 |" in t
    assert "| exposures as units (secondary view) | +0.099 | [+0.049, +0.149] | 3e-05 |" in t
    assert "like rate 0.137 against 0.072 (always-valid interval on likes [+0.007, +0.125])" in t
    assert "1.120 against 0.800" in t and "no guardrail breaches" in t


def test_the_scaleout_table_puts_one_process_first():
    from eval.results_renderers import scaleout_table

    rows = [{"metric": "users/s, 2 processes x 4 threads", "value": 1.64, "baseline": "1 process x 8 threads",
             "baseline_value": 1.36, "ratio": 1.64 / 1.36},
            {"metric": "users/s end to end, 2 processes", "value": 1.38, "baseline_value": 1.15, "ratio": 1.2},
            {"metric": "peak RSS of the largest process, 2 processes", "value": 4.35, "baseline_value": 4.3,
             "ratio": None}]
    t = scaleout_table({"suite": "scaleout", "rows": rows, "provenance": PROV})
    assert "| | 1 process × 8 threads | 2 processes × 4 threads | ratio |" in t  # the machine's threads, not 2 cores
    assert "| users/s over the generation window | 1.36 | 1.64 | **1.21×** |" in t
    assert "| 1.15 | 1.38 | 1.20× |" in t and "| 4.30 GiB | 4.35 GiB | |" in t


def test_the_rank_table_pairs_the_rank_task_with_its_ablation():
    from eval.results_renderers import ABLATION_ROW, RANK_ROW, rank_task_table

    cols = ("utility", "ideal_palette", "category_kept", "parts_kept", "identity_cos")
    rank = {k: [1.0, 0.0, 1.0, 0.0] for k in cols}
    ablation = {k: [1.0, 1.0, 1.0, 1.0] for k in cols}  # the rank task loses 0.5 on every column
    rows = [{"method": n, **{k: {"mean": float(sum(v[k]) / 4)} for k in cols}}
            for n, v in (("ragar", ablation), (ABLATION_ROW, ablation), (RANK_ROW, rank))]
    t = rank_task_table({"requests": 4, "rows": rows, "per_request": {RANK_ROW: rank, ABLATION_ROW: ablation},
                         "provenance": PROV})
    assert f"| {RANK_ROW} | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |" in t
    assert "| rank task − ablation (paired) | −0.500 [−" in t and "4 requests, same seeds" in t


def test_the_stage_table_reads_each_stage_of_the_release():
    from eval.results_renderers import training_stages

    ae = {"steps": 2500, "first_loss": 3.0, "final_loss": 0.03, "seconds": 840}
    d = {"device": "cpu, 2 cores", "autoencoder": ae,
         "generator_epsilon_stage": {"steps": 2000, "first_loss": 0.7, "final_loss": 0.026}}
    t = training_stages(d)
    assert "| 1 | the autoencoder, 64 px to 32x32x4 latents, from scratch | 2,500 | 3.000 → 0.030 | 14 min |" in t
    assert "| 3 | the latent UNet on aligned pairs, ε-prediction | 2,000 | 0.700 → 0.026 | not recorded" in t
    assert "| 2 |" not in t and "took 14 min in all, on cpu, 2 cores" in t
    # a release that lists its stages (scripts/release_generator.py) is read in its own order
    d = {"device": "cpu", "stages": [{"key": "autoencoder", "what": "ae"}, {"key": "gen", "what": "the UNet"}],
         "autoencoder": ae, "gen": {"steps": 5000, "first_loss": 0.4, "final_loss": 0.07, "seconds_this_run": 600}}
    t = training_stages(d)
    assert "| 1 | ae | 2,500 |" in t and "| 2 | the UNet | 5,000 | 0.400 → 0.070 | 10 min |" in t
    assert "held-out" not in t  # no autoencoder evaluation recorded, no sentence about one
    # the released vae's evaluation (`ragar eval autoencoder`), when the release recorded it
    d["autoencoder_eval"] = {"images": 256, "image_size": 64, "latent_shape": [8, 32, 32],
                             "psnr": {"mean": 31.5, "ci": [31.2, 31.8], "min": 25.25},
                             "identity_cos": {"mean": 0.9, "ci": [0.88, 0.92], "min": 0.5}}
    t = training_stages(d)
    assert ("The released vae (32x32x8 latents) reconstructs the 256 held-out renders at 31.50 dB PSNR "
            "[31.20, 31.80] (worst 25.25), NearID identity cos 0.900 [0.880, 0.920] (worst 0.500).") in t


def test_the_like_weight_table_marks_the_default():
    from eval.results_renderers import like_weight_table

    figs = {"mass_on_ideal_palette": 0.5, "heaviest_palette_is_ideal": 0.6, "weighted_utility": 1.7,
            "mass_on_reference_category": 0.9}
    d = {"requests": 400, "seed": 7, "default_like_weight": 10.0, "provenance": PROV | {"command": "python scripts/x"},
         "rows": [{"like_weight": 1.5, **figs}, {"like_weight": 10.0, **figs},
                  {"like_weight": None, "method": "uniform", **figs}]}
    t = like_weight_table(d)
    assert "| 1.5 | 0.500 | 0.600 | 1.700 | 0.900 |" in t and "| 10 (default) |" in t and "| uniform |" in t


def test_the_device_table_shows_the_card_beside_the_cpu_when_one_ran():
    from eval.results_gpu import device_table

    rows = [{"figure": "generation, batch 8", "accelerator": 120.0, "cpu": 0.94, "unit": "images/s", "ratio": 127.7}]
    t = device_table({"card": "H100", "cpu_threads": 16, "rows": rows, "command": "python -m benchmarks.device_check",
                      "commit": None, "date": "2026-11-28"})
    assert "| figure | H100 | CPU (16 threads) | ratio |" in t
    assert "| generation, batch 8 | 120 images/s | 0.94 images/s | 127.7 |" in t
    cpu_only = device_table({"card": "cpu", "cpu_threads": 2, "rows": [rows[0] | {"accelerator": None}]})
    assert "| figure | CPU (2 threads) |" in cpu_only and "| generation, batch 8 | 0.94 images/s |" in cpu_only


def test_the_tradeoff_sentence_reads_the_curve():
    from eval.results_renderers import replay_tradeoff

    t = [{"preference_guidance_scale": s, "utility": u, "identity_cos": i}
         for s, u, i in ((0, 0.8, 0.71), (3, 1.7, 0.73))]
    out = replay_tradeoff({"tradeoff": t, "provenance": PROV})
    assert out.startswith("Oracle utility 0.80 at scale 0, 1.70 at scale 3; identity cos between 0.710 and 0.730")


def test_the_device_table_sets_a_lent_card_beside_the_development_cpu():
    from eval.results_gpu import device_table

    card = {"card": "NVIDIA H200", "device": "cuda:0 (NVIDIA H200, bfloat16)", "command": "python -m x --no-cpu",
            "commit": "abc1234", "date": "2026-11-28",
            "rows": [{"figure": "generation, batch 1", "accelerator": 2.8, "cpu": None, "unit": "images/s"},
                     {"figure": "one best-of-4 request (p50)", "accelerator": 0.4, "cpu": None, "unit": "s"},
                     {"figure": "generation, batch 256", "accelerator": 486.0, "cpu": None, "unit": "images/s"}]}
    cpu = {"card": "cpu", "cpu_threads": 2, "command": "python -m x", "date": "2026-11-28",
           "rows": [{"figure": "generation, batch 1", "accelerator": None, "cpu": 0.7, "unit": "images/s"},
                    {"figure": "one best-of-4 request (p50)", "accelerator": None, "cpu": 3.2, "unit": "s"}]}
    t = device_table({"a.json": card, "b.json": cpu})
    assert "| figure | NVIDIA H200 | CPU (2 threads) (development machine) | ratio |" in t
    assert "| generation, batch 1 | 2.8 images/s | 0.7 images/s | 4.0 |" in t
    assert "| one best-of-4 request (p50) | 0.4 s | 3.2 s | 8.0 |" in t  # a latency's ratio is CPU over card
    assert "| generation, batch 256 | 486 images/s | — | — |" in t  # a figure the CPU did not run


def test_the_recipe_table_reads_each_stage():
    from eval.results_gpu import recipe_table

    d = {"pairs": 30885, "image_size": 128, "render_s": 25.6, "seconds": 369.0, "card": "NVIDIA H200", "torch": "2.11",
         "export": {"autoencoder": {"batch_size": 128}, "generator": {"batch_size": 128}},
         "stages": [{"stage": "autoencoder", "steps": 2000, "first_loss": 2.89, "final_loss": 0.026,
                     "psnr_held_out": 29.66, "seconds": 64.0},
                    {"stage": "generator", "steps": 1800, "first_loss": 0.536, "final_loss": 0.046,
                     "seconds_this_run": 240.0}]}
    t = recipe_table(d)
    assert "| autoencoder | 2,000 | 128 | 2.890 → 0.026 | 29.7 dB | 64 | 4,000 |" in t
    assert "| generator | 1,800 | 128 | 0.536 → 0.046 | — | 240 | 960 |" in t
    assert "30,885 pairs rendered at 128 px in 26 s; 369 s in all on NVIDIA H200" in t
