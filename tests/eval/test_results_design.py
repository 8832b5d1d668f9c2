"""The tables of design measurements (eval/results_design.py): exact cells from a JSON of each shape."""

from eval.results_design import _duration, nearid_ablation_table, unet_speed_table, world_sizes_table

PROV = {"command": "python scripts/x.py", "commit": "89abcdef" * 5, "dirty": True, "date": "2026-11-28T10:00:00+00:00"}


def test_durations_read_as_a_person_writes_them():
    assert _duration(0.34) == "0.3 s" and _duration(59.94) == "59.9 s"
    assert _duration(120.2) == "2 min 00 s" and _duration(869) == "14 min 29 s"


def test_the_world_sizes_table_groups_counts_and_reads_the_peak():
    d = {"cpu_count": 2, "provenance": PROV, "rows": [
        {"size": "tiny", "items": 48, "views": 192, "distractors": 96, "users": 40, "interactions": 5123,
         "seconds": 1.25, "peak_rss_gib": 0.412},
        {"size": "large", "items": 100000, "views": 400000, "distractors": 100000, "users": 50000,
         "interactions": 5688014, "seconds": 121.0, "peak_rss_gib": 1.5}]}
    t = world_sizes_table(d)
    assert "| `tiny` | 48 | 192 + 96 | 40 | 5,123 | 1.2 s | 0.41 GiB |" in t
    assert "| `large` | 100,000 | 400,000 + 100,000 | 50,000 | 5,688,014 | 2 min 01 s | 1.50 GiB |" in t
    assert "On 2 CPU cores." in t and "commit 89abcde+" in t and "2026-11-28" in t


def test_the_unet_speed_table_gives_each_variant_and_the_speed_up():
    d = {"shape": {"latents": [4, 32, 32], "batch_size": 32}, "provenance": PROV, "rows": [
        {"variant": "before", "params_M": 3.3, "steps_per_s_1": 0.3, "steps_per_s_2": 0.5},
        {"variant": "shipped", "params_M": 5.84, "steps_per_s_1": 0.834, "steps_per_s_2": 1.483}]}
    t = unet_speed_table(d)
    assert "| before | 3.30 M | 0.300 | 0.500 |" in t and "| shipped | 5.84 M | 0.834 | 1.483 |" in t
    assert "Batch 32 of 32x32x4 latents" in t
    assert "at 2 threads the last variant trains 3.0× as many steps a second as the first" in t


def test_the_nearid_table_puts_the_backbone_first_and_marks_the_shipped_recipe():
    base = {"head": True, "final_loss": 0.1, "seconds": 200.0, "command": "ragar train identity-encoder"}
    d = {"held_out_identities": 38, "triplets": 304, "steps": 1200, "seed": 0, "provenance": PROV, "rows": [
        {"run": "backbone: backbone (pooled features)", "levels": "head", "head": False, "ssr": 0.724},
        {"run": "head-demo", "levels": "head", "second_world": False, "training_identities": 154, "ssr": 0.849,
         **base},
        {"run": "shipped", "levels": "block10,block14,head", "second_world": True, "training_identities": 2202,
         "ssr": 0.974, **base}]}
    t = nearid_ablation_table(d).splitlines()
    assert t[2] == "| — (the backbone alone, its head conv pooled) | — | 0.724 |"
    assert t[3] == "| the 4x4 head conv | the demo world's 154 training identities | 0.849 |"
    assert t[4] == ("| **blocks 10, 14 and the head conv** | **+ every identity of a second world (seed 101): "
                    "2,202 in all** | **0.974** |")
    assert "304 triplets from 38 held-out identities; 1,200 steps, seed 0" in t[6]


def test_the_lora_table_marks_the_default_and_leaves_the_base_without_positives():
    from eval.results_design import lora_sweep_table

    d = {"identities": 8, "provenance": PROV, "rows": [
        {"run": "heavy", "setting": "none (base encoder)", "positives": None, "ndcg": 0.6361, "pr_auc": 0.351},
        {"run": "default", "setting": "block 15 (default)", "default": True, "positives": "real + pastes",
         "ndcg": 0.639, "pr_auc": 0.3564}]}
    t = lora_sweep_table(d)
    assert "| none (base encoder) | — | 0.636 | 0.351 |" in t
    assert "| **block 15 (default)** | **real + pastes** | **0.639** | **0.356** |" in t
    assert "Means over the first 8 held-out identities." in t


def test_the_large_world_table_reads_its_steps_and_the_scaleout_suite():
    from eval.results_design import large_world_memory_table

    mem = {"budget_gib": 8, "provenance": PROV, "rows": [
        {"step": "world build", "seconds": 120.0, "peak_rss_gib": 1.5},
        {"step": "ranker features", "seconds": 110.0, "peak_rss_gib": 3.26, "impressions": 1000740, "embed_s": 85.0,
         "features_s": 17.5},
        {"step": "replay", "seconds": 869.0, "peak_rss_gib": 5.35}]}
    bench = "generate-batch (large world, 192 users)"
    scale = {"suite": "scaleout", "provenance": PROV | {"command": "python -m benchmarks.run --only scaleout"},
             "rows": [{"bench": bench, "metric": "users/s end to end, 2 processes", "value": 1.2,
                       "baseline_value": 1.0},
                      {"bench": bench, "metric": "peak RSS of the largest process, 2 processes", "value": 4.4,
                       "baseline_value": 4.3}]}
    t = large_world_memory_table({"docs/results/large_world_memory.json": mem, "scaleout.json": scale})
    assert "| `ragar world build --size large` | 2 min 00 s | 1.50 GiB | 8 GiB |" in t
    assert "1,000,740 test-window impressions" in t and "| 17.5 s (+1 min 25 s catalog embedding) | 3.26 GiB |" in t
    assert "| 14 min 29 s | 5.35 GiB | 8 GiB |" in t
    assert "on 192 users, 1 process (scale-out suite) | 3 min 12 s | 4.30 GiB | 8 GiB |" in t
    assert "| the same, 2 processes under `accelerate launch` | 2 min 40 s | 4.40 GiB each | 8 GiB a process |" in t
    assert "`python -m benchmarks.run --only scaleout` (commit 89abcde" in t


def test_the_guidance_table_reads_identity_against_the_perfect_answer_and_pairs_with_the_shipped_scales():
    from eval.results_design import guidance_sweep_table

    def row(method, scales, ident, palette):
        vals = {"identity_cos": ident, "parts_kept": 0.8, "category_kept": 1.0, "utility": 1.6,
                "ideal_palette": palette}
        return {"method": method, "scales": scales, **{k: {"mean": v, "ci": [v, v]} for k, v in vals.items()}}

    d = {"requests": 60, "provenance": PROV | {"command": "python scripts/guidance_sweep.py"},
         "rows": [row("perfect answer (world render)", None, 0.9, 1.0), row("ragar (3, 6)", [3.0, 6.0], 0.81, 0.65),
                  row("ragar (2.5, 4)", [2.5, 4.0], 0.846, 0.55)],
         "differences": [{"method": "ragar (2.5, 4)", "versus": "ragar (3, 6)", "metric": "identity_cos",
                          "diff": 0.036, "lo": 0.01, "hi": 0.05},
                         {"method": "ragar (2.5, 4)", "versus": "ragar (3, 6)", "metric": "ideal_palette",
                          "diff": -0.1, "lo": -0.2, "hi": -0.02}]}
    t = guidance_sweep_table(d)
    assert "| perfect answer (world render) | 0.900 (100%) | 0.800 | 1.000 | 1.600 | 1.000 | — | — |" in t
    assert "| **(3, 6)** | **0.810 (90%)** | **0.800** |" in t and "| **0.650** | — | — |" in t
    assert "| (2.5, 4) | 0.846 (94%) |" in t and "| +0.036 [+0.010, +0.050] | −0.100 [−0.200, −0.020] |" in t
    assert "first 60 requests" in t and "`python scripts/guidance_sweep.py`" in t
