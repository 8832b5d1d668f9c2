import sys

from benchmarks.harness import Row, run_measured, timeit


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


def test_run_measured_reads_the_largest_descendant_peak_and_the_output():
    # the child starts a grandchild that holds 300 MiB; the child itself stays small
    grandchild = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('done')"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}]); sys.exit(3)"
    run = run_measured([sys.executable, "-c", child])
    assert run.returncode == 3 and run.stdout == "done\n" and run.seconds > 0
    assert 0.29 < run.peak_rss_gib < 0.5
    small = run_measured([sys.executable, "-c", "import sys; sys.stderr.write('e')"])
    assert small.returncode == 0 and small.stderr == "e" and small.peak_rss_gib < 0.1


def test_generation_suite_measures_against_its_baselines():
    from benchmarks import bench_generation

    rows = bench_generation.run(quick=True)
    assert [r.baseline for r in rows][2:] == ["batch 1", "4 sequential calls", "generation s of the same request"]
    assert rows[0].baseline.startswith("previous generator (32 px pixel space")
    assert "128-px recipe" in rows[1].metric and rows[1].baseline.startswith("shipped generator")
    assert all(r.value > 0 and r.baseline_value > 0 for r in rows)


def test_a_suite_json_carries_its_rows_machine_and_command(tmp_path):
    import json

    from benchmarks.harness import machine
    from benchmarks.run import write_suite
    from eval.results_renderers import bench_table

    rows = [Row("index", "hnsw queries/s", 4394.2, "q/s", "flat (exact) search", 742.0),
            Row("index", "hnsw build s", 69.8, "s", "flat build", 1.25, higher_is_better=False)]
    d = json.loads(write_suite(tmp_path, "index", rows, machine()).read_text())
    assert d["suite"] == "index" and [r["value"] for r in d["rows"]] == [4394.2, 69.8]
    p = d["provenance"]
    assert p["command"] == "python -m benchmarks.run --only index" and len(p["commit"]) == 40 and p["date"]
    table = bench_table(d)
    assert "| hnsw queries/s | 4,394 | flat (exact) search | 742 | 5.92× |" in table
    assert "| hnsw build s | 69.8 s | flat build | 1.25 s | 0.02× |" in table
    assert f"commit {p['commit'][:7]}" in table and "python -m benchmarks.run --only index" in table


def test_a_quick_run_leaves_the_documented_suite_files_alone(tmp_path, monkeypatch):
    import sys

    from benchmarks import run

    monkeypatch.setattr(sys, "argv", ["run", "--only", "preference", "--quick", "--out", str(tmp_path)])
    run.main()
    assert (tmp_path / "latest.json").exists() and not (tmp_path / "preference.json").exists()
