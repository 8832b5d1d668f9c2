from benchmarks.harness import Row, timeit


def test_ratio_direction():
    assert Row("b", "qps", 200.0, "q/s", "base", 100.0).ratio == 2.0
    assert Row("b", "build s", 50.0, "s", "base", 100.0, higher_is_better=False).ratio == 2.0
    assert Row("b", "x", 1.0, "").ratio is None


def test_preference_suite_runs_and_compares_to_its_baseline():
    from benchmarks import bench_preference

    (row,) = bench_preference.run(quick=True)
    assert row.baseline == "naive per-user loop" and row.value > 0 and row.baseline_value > 0


def test_timeit_returns_the_best_run():
    calls = []
    assert timeit(lambda: calls.append(1), repeat=3, warmup=2) >= 0
    assert len(calls) == 5


def test_generation_suite_measures_against_its_baselines():
    from benchmarks import bench_generation

    rows = bench_generation.run(quick=True)
    assert [r.baseline for r in rows][1:] == ["batch 1", "4 sequential calls", "generation s of the same request"]
    assert rows[0].baseline.startswith("previous generator (32 px pixel space")
    assert all(r.value > 0 and r.baseline_value > 0 for r in rows)
