"""Sharded batch jobs and data-parallel training: the unit arithmetic, the job state on disk, and real
`accelerate launch` runs of 2 processes over gloo on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from ragar.distributed import Processes, ShardedJob, stable_seed, unit_of, units_for
from serving.server import free_port

BIN = Path(sys.executable).parent


def test_unit_of_is_sha256_and_covers_every_unit():
    # by hand: the first 8 bytes of sha256("u000001"), big-endian, mod 7
    want = int.from_bytes(hashlib.sha256(b"u000001").digest()[:8], "big") % 7
    assert unit_of("u000001", 7) == want
    got = {unit_of(f"u{i:06d}", 8) for i in range(400)}
    assert got == set(range(8))


def test_stable_seed_depends_on_the_row_only():
    a = stable_seed(0, "u1", "item-3")
    assert a == stable_seed(0, "u1", "item-3") and 0 <= a < 2**31
    assert len({stable_seed(0, "u1", "item-3"), stable_seed(1, "u1", "item-3"), stable_seed(0, "u2", "item-3"),
                stable_seed(0, "u1", "item-4")}) == 4


def test_units_for_depends_on_rows_not_processes():
    assert [units_for(r, 64) for r in (1, 64, 65, 640)] == [1, 1, 2, 10]
    with pytest.raises(ValueError, match="at least 1"):
        units_for(10, 0)


def test_sharded_job_splits_resumes_and_refuses_other_settings(tmp_path):
    tasks = [("m", u) for u in range(5)]
    jobs = [ShardedJob(tmp_path, {"seed": 1}, tasks, Processes(r, 2)) for r in range(2)]
    mine = [list(j.mine()) for j in jobs]
    assert mine == [[("m", 0), ("m", 2), ("m", 4)], [("m", 1), ("m", 3)]]  # disjoint, and together all
    with pytest.raises(RuntimeError, match="5 shards are missing"):
        jobs[0].merge(["x"])
    for label, u in mine[1]:
        jobs[1].write(label, u, pl.DataFrame({"x": [u * 10 + 1, u * 10]}))
    assert jobs[1].pending() == 3 and list(jobs[1].mine()) == []
    assert not list(tmp_path.joinpath("shards").glob(".*"))  # no temporary file is left behind
    for label, u in mine[0]:
        jobs[0].write(label, u, pl.DataFrame({"x": [u * 10]}))
    assert jobs[0].pending() == 0
    assert jobs[0].merge(["x"])["x"].to_list() == [0, 10, 11, 20, 30, 31, 40]
    assert pl.read_parquet(tmp_path / "merged.parquet")["x"].to_list() == [0, 10, 11, 20, 30, 31, 40]
    with pytest.raises(ValueError, match="other settings"):
        ShardedJob(tmp_path, {"seed": 2}, tasks)


def test_close_group_destroys_the_group_and_is_a_no_op_without_one():
    import torch.distributed as dist

    from ragar.distributed import close_group

    close_group()  # no group: nothing to do
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    assert dist.is_initialized()
    close_group()
    assert not dist.is_initialized()


def _batch_args(models: dict, out: Path, reference: str) -> list[str]:
    return ["generate-batch", "--data", str(models["data"]), "--generator", str(models["generator"]),
            "--rankers", str(models["rankers"]), "--config", "tiny", "--users", "all", "--reference", reference,
            "--n", "2", "--batch", "3", "--unit-size", "4", "--set", "generation.num_inference_steps=4",
            "--out", str(out)]


def _launch(args: list[str]) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            str(BIN / "ragar"), *args]


def _one_then_two(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``ragar ARGS`` on one process into tmp/one, then on two under accelerate launch into tmp/two,
    one thread a process on both sides (the float summation order follows the thread count)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([str(BIN / "ragar"), *args, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(_launch([*args, "--out", str(tmp_path / "two")]), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _images(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (root / "images").rglob("*.png")}


@pytest.fixture(scope="module")
def reference(tiny_world) -> str:
    return pl.read_parquet(tiny_world / "items.parquet")["item_id"][0]


def test_two_processes_killed_midway_resume_to_the_one_process_output(tiny_models, reference, tmp_path):
    # one thread a process on both sides: accelerate launch sets OMP_NUM_THREADS=1, and the float
    # summation order of a convolution depends on the thread count (see docs/SCALING.md)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    single, multi = tmp_path / "single", tmp_path / "multi"
    r = subprocess.run([str(BIN / "ragar"), *_batch_args(tiny_models, single, reference)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    total = json.loads((single / "manifest.json").read_text())["tasks"]
    assert total >= 6

    proc = subprocess.Popen(_launch(_batch_args(tiny_models, multi, reference)), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((multi / "shards").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-job
    proc.wait(timeout=30)
    done = {p.name: p.stat().st_mtime_ns for p in (multi / "shards").glob("*.parquet")}
    assert 2 <= len(done) < total, f"the kill should land midway: {len(done)} of {total} units done"
    assert not (multi / "merged.parquet").exists()

    r = subprocess.run(_launch(_batch_args(tiny_models, multi, reference)), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the units finished before the kill were kept, not redone
    assert {n: (multi / "shards" / n).stat().st_mtime_ns for n in done} == done
    a, b = pl.read_parquet(single / "merged.parquet"), pl.read_parquet(multi / "merged.parquet")
    assert b.height == a.height == b.select("user_id", "reference_item_id").n_unique()  # no duplicates, no gaps
    assert a.equals(b)
    images = _images(multi)
    assert sorted(images) == sorted(b["image"].to_list())  # one image a row, none left over from the kill
    assert images == _images(single)
    assert (multi / "index.html").exists()
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["rows"] == a.height


def test_two_process_generator_training_matches_one_process(tiny_world, tmp_path):
    """Data parallel over gloo: each process takes its slice of the same global batch, DDP averages
    the gradients, so 2 processes train the weights 1 process does (to float rounding)."""
    from safetensors.torch import load_file

    from tests.conftest import TINY_GENERATOR

    args = ["train", "generator", "--data", str(tiny_world), "--config", "tiny", "--steps", "4", *TINY_GENERATOR,
            "--set", "generator.ema_decay=0"]  # the released (EMA) weights are then the trained ones
    _one_then_two(args, tmp_path)
    one, two = (json.loads((tmp_path / d / "training.json").read_text()) for d in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-5)
    a, b = (load_file(str(tmp_path / d / "unet" / "diffusion_pytorch_model.safetensors")) for d in ("one", "two"))
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    # Adam turns a gradient into a step of about lr whatever its size, so an entry whose gradient is
    # near zero can step differently when the two processes sum in another order (CI saw 1.2e-4 once;
    # 4.9e-6 of the entries were off by > 1e-5). Rounding moves a handful; a wrong average, most.
    assert float((diff > 1e-5).float().mean()) < 1e-3
    assert float(diff.max()) < 2 * 4 * 2e-4  # at most lr (2e-4) a step in each run, 4 steps


def test_two_process_ranker_training_matches_one_process(tiny_world, tmp_path):
    """The torch ranker trains data parallel (gradients all-reduced over gloo); only the main
    process writes, and the result is the one-process model to float rounding."""
    from safetensors.torch import load_file

    args = ["train", "ranker", "--data", str(tiny_world), "--config", "tiny"]
    r = _one_then_two(args, tmp_path)
    assert r.stdout.count("rankers saved to") == 1  # one process reports and saves
    one, two = (json.loads((tmp_path / d / "rankers.json").read_text()) for d in ("one", "two"))
    assert two["din_losses"]["ragar"] == pytest.approx(one["din_losses"]["ragar"], abs=1e-5)
    for variant in ("ragar", "uniform"):
        a, b = (load_file(str(next((tmp_path / d / f"din-{variant}").glob("*.safetensors")))) for d in ("one", "two"))
        assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_batch_requests_reads_files_and_names_bad_input(tmp_path):
    from ragar.generation.batch import batch_requests

    known, catalog = ["u1", "u2", "u3"], {"i1", "i2"}
    got = batch_requests("all", known, catalog, "i1")
    assert got.rows() == [("u1", "i1"), ("u2", "i1"), ("u3", "i1")]
    (tmp_path / "u.csv").write_text("user_id,reference_item_id\nu2,i2\n007,i1\nu2,i2\n")
    got = batch_requests(tmp_path / "u.csv", known, catalog)
    assert got.rows() == [("007", "i1"), ("u2", "i2")]  # ids stay strings; duplicates dropped; unknown users kept
    (tmp_path / "u.txt").write_text("u3\n\nu1\n")
    assert batch_requests(tmp_path / "u.txt", known, catalog, "i2")["user_id"].to_list() == ["u1", "u3"]
    with pytest.raises(KeyError, match="unknown reference items: nope"):
        batch_requests("all", known, catalog, "nope")
    with pytest.raises(ValueError, match="no reference_item_id column"):
        batch_requests(tmp_path / "u.txt", known, catalog)
    (tmp_path / "bad.csv").write_text("uid\nu1\n")
    with pytest.raises(ValueError, match="no user_id column"):
        batch_requests(tmp_path / "bad.csv", known, catalog, "i1")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no users"):
        batch_requests(tmp_path / "empty.txt", known, catalog, "i1")
    with pytest.raises(FileNotFoundError, match="no such users file"):
        batch_requests(tmp_path / "missing.csv", known, catalog, "i1")


def test_generate_batch_cli_errors(tiny_models, reference, tmp_path):
    from typer.testing import CliRunner

    from ragar.cli import app

    runner = CliRunner()
    args = _batch_args(tiny_models, tmp_path / "out", reference)
    r = runner.invoke(app, [*args, "--n", "99"])
    assert r.exit_code == 2 and "configured cap" in r.output
    r = runner.invoke(app, [*[a if a != reference else "no-such-item" for a in args]])
    assert r.exit_code == 2 and "unknown reference items: no-such-item" in r.output
    r = runner.invoke(app, [*args, "--method", "best"])
    assert r.exit_code == 2 and "unknown method" in r.output


def test_two_process_replay_merges_to_the_one_process_scores(tiny_models, tmp_path):
    args = ["eval", "replay", "--data", str(tiny_models["data"]), "--generator", str(tiny_models["generator"]),
            "--rankers", str(tiny_models["rankers"]), "--config", "tiny", "--requests", "12",
            "--tradeoff-scales", "0", "--unit-size", "4", "--set", "generation.num_inference_steps=5"]
    _one_then_two(args, tmp_path)
    a, b = (pl.read_parquet(tmp_path / d / "merged.parquet") for d in ("one", "two"))
    assert a.height == 36 and a.equals(b)  # 12 requests x 3 methods
    one, two = (json.loads((tmp_path / d / "replay.json").read_text()) for d in ("one", "two"))
    assert one["rows"] == two["rows"] and one["differences"] == two["differences"]
    tasks = json.loads((tmp_path / "two" / "manifest.json").read_text())["tasks"]
    assert tasks % 3 == 0 and len(list((tmp_path / "two" / "shards").glob("*.parquet"))) == tasks
