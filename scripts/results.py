"""``make results``: rerun the command behind every results JSON the docs cite, then rewrite the tables.

Each JSON under ``docs/results/`` carries the command that wrote it (``provenance``); this reruns
the registered form of that command into ``runs/results/``, copies the fresh JSON over the old one,
and re-renders every marked table in README.md and docs/*.md (:mod:`eval.results_tables`).
Long (the generation evaluation alone is about half an hour on 2 cores); not part of CI.

    python scripts/results.py              # rerun everything, then rewrite the tables
    python scripts/results.py --tables     # only rewrite the tables from the JSON already there
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import SUITES  # noqa: E402
from eval.results_tables import blocks, json_paths, rewrite  # noqa: E402

#: docs/results/<file> -> (the command that measures it, the JSON it writes)
COMMANDS = {
    "docs/results/generation.json": (
        ["ragar", "eval", "generation", "--data", "runs/demo/world", "--rankers", "runs/demo/rankers",
         "--requests", "120", "--config", "demo", "--out", "runs/results/generation"],
        "runs/results/generation/generation.json"),
    # the same protocol on a second world (world seed 1) the generator never saw (PREREQUISITES)
    "docs/results/generation_seed1.json": (
        ["ragar", "eval", "generation", "--data", "runs/world-seed1/world", "--rankers", "runs/world-seed1/rankers",
         "--requests", "120", "--best-of", "0", "--config", "demo", "--out", "runs/results/generation-seed1"],
        "runs/results/generation-seed1/generation.json"),
    # the rank task against its ablation, both fine-tuned from the shipped weights first (PREREQUISITES)
    "docs/results/rank_task.json": (
        ["ragar", "eval", "generation", "--data", "runs/demo/world", "--rankers", "runs/demo/rankers",
         "--rank-generator", "runs/gen-rank", "--ablation-generator", "runs/gen-plain", "--requests", "60",
         "--best-of", "0", "--config", "demo", "--out", "runs/results/rank-task"],
        "runs/results/rank-task/generation.json"),
    # the same with the consistency term (generator.rank_consistency=5), against the same ablation
    "docs/results/rank_task_consistency.json": (
        ["ragar", "eval", "generation", "--data", "runs/demo/world", "--rankers", "runs/demo/rankers",
         "--rank-generator", "runs/gen-rank-c", "--ablation-generator", "runs/gen-plain", "--requests", "60",
         "--best-of", "0", "--config", "demo", "--out", "runs/results/rank-task-consistency"],
        "runs/results/rank-task-consistency/generation.json"),
    "docs/results/like_weight.json": (
        ["python", "scripts/like_weight_sweep.py", "--out", "runs/results/like-weight"],
        "runs/results/like-weight/like_weight.json"),
    "docs/results/preference.json": (
        ["ragar", "eval", "preference", "--data", "runs/demo/world", "--config", "demo",
         "--out", "runs/results/preference"],
        "runs/results/preference/preference.json"),
    "docs/results/ranker.json": (
        ["ragar", "eval", "ranker", "--data", "runs/demo/world", "--rankers", "runs/demo/rankers", "--config", "demo",
         "--out", "runs/results/ranker"],
        "runs/results/ranker/ranker.json"),
    "docs/results/clpips.json": (
        ["ragar", "eval", "clpips", "--data", "runs/demo/world", "--out", "runs/results/clpips"],
        "runs/results/clpips/clpips.json"),
    "docs/results/replay.json": (
        ["ragar", "eval", "replay", "--data", "runs/demo/world", "--rankers", "runs/demo/rankers",
         "--requests", "200", "--config", "demo", "--out", "runs/results/replay"],
        "runs/results/replay/replay.json"),
    "docs/results/personalized_encoder.json": (
        ["ragar", "eval", "personalized-encoder", "--data", "runs/demo/world", "--identities", "24",
         "--config", "demo", "--out", "runs/results/personalized-encoder"],
        "runs/results/personalized-encoder/personalized_encoder.json"),
    # the A/B simulation: returning users for up to 12 days, stopped by the test or the time budget
    "docs/results/ab_simulation.json": (
        ["ragar", "ab", "simulate", "--experiment", "ragar-vs-uniform", "--experiments", "configs/experiments.yaml",
         "--users", "300", "--days", "12", "--visit-p", "0.5", "--requests-per-visit", "2", "--until-decision",
         "--budget-minutes", "10", "--out", "runs/results/ab-sim"],
        "runs/results/ab-sim/report.json"),
    # the measurements that chose a design (eval/results_design.py): the world's sizes, the UNet
    # variants' training speed, what the NearID head reads and is trained on, the LoRA settings
    "docs/results/world_sizes.json": (
        ["python", "scripts/world_sizes.py", "--out", "runs/results/world-sizes"],
        "runs/results/world-sizes/world_sizes.json"),
    "docs/results/unet_speed.json": (
        ["python", "-m", "benchmarks.generator_training_speed", "--steps", "4", "--out", "runs/results/unet-speed"],
        "runs/results/unet-speed/unet_speed.json"),
    "docs/results/nearid_ablation.json": (
        ["python", "scripts/nearid_ablation.py", "--data", "runs/demo/world", "--extra-data", "runs/nearid-extra/w101",
         "--out", "runs/results/nearid-ablation"],
        "runs/results/nearid-ablation/nearid_ablation.json"),
    "docs/results/lora_sweep.json": (
        ["python", "scripts/lora_sweep.py", "--out", "runs/results/lora-sweep"],
        "runs/results/lora-sweep/lora_sweep.json"),
    # RAGAR's row at other guidance scales than the shipped (3, 6), on 60 requests (docs/GENERATION.md)
    "docs/results/guidance_sweep.json": (
        ["python", "scripts/guidance_sweep.py", "--requests", "60", "--scales", "3,6", "5,6", "3,4", "5,8", "4,5",
         "2,6", "2,4", "--out", "runs/results/guidance-sweep"],
        "runs/results/guidance-sweep/guidance_sweep.json"),
    # peak memory of the steps that read the large world (docs/SCALING.md; 35 minutes on 2 cores)
    "docs/results/large_world_memory.json": (
        ["python", "scripts/large_world_memory.py", "--demo", "runs/demo/world", "--out",
         "runs/results/large-world-memory"],
        "runs/results/large-world-memory/large_world_memory.json"),
}
_FINE_TUNE = ["ragar", "train", "generator", "--data", "runs/demo/world", "--config", "demo", "--init",
              "ragar/weights/demo-generator", "--steps", "150", "--max-pairs", "4000",
              "--set", "generator.checkpoint_every=50", "--set", "generator.ema_decay=0.95"]
_RANK = ["--rank-task", "--rankers", "runs/demo/rankers"]
#: what a command reads that `make demo` does not make: (the path it needs, the command that makes
#: it), run first when the path is missing (a rerun measures the same inputs again)
PREREQUISITES = {
    "docs/results/generation_seed1.json": [
        ("runs/world-seed1/world/world.json", ["ragar", "world", "build", "--out", "runs/world-seed1/world",
                                               "--size", "demo", "--set", "world.seed=1"]),
        ("runs/world-seed1/rankers/rankers.json", ["ragar", "train", "ranker", "--data", "runs/world-seed1/world",
                                                   "--out", "runs/world-seed1/rankers", "--config", "demo"])],
    # the second world the shipped NearID head also trains on (docs/EVALUATION.md)
    "docs/results/nearid_ablation.json": [
        ("runs/nearid-extra/w101/world.json", ["ragar", "world", "build", "--out", "runs/nearid-extra/w101",
                                               "--set", "world.seed=101", "--set", "world.identities_per_category=256",
                                               "--set", "world.n_users=50"])],
    "docs/results/rank_task.json": [
        ("runs/gen-rank/training.json", [*_FINE_TUNE, *_RANK, "--out", "runs/gen-rank"]),
        ("runs/gen-plain/training.json", [*_FINE_TUNE, "--out", "runs/gen-plain"])],
    "docs/results/rank_task_consistency.json": [
        ("runs/gen-rank-c/training.json", [*_FINE_TUNE, *_RANK, "--set", "generator.rank_consistency=5",
                                           "--out", "runs/gen-rank-c"]),
        ("runs/gen-plain/training.json", [*_FINE_TUNE, "--out", "runs/gen-plain"])],
}
#: figures the docs show that a command draws beside its JSON: copied over when it reruns
FIGURES = {"docs/results/replay.json": [("runs/results/replay/tradeoff.png", "docs/img/replay_tradeoff.png")],
           "docs/results/generation.json": [
               ("runs/results/generation/one_reference_many_users.png", "docs/img/one_reference_many_users.png"),
               ("runs/results/generation/methods_grid.png", "docs/img/generation_methods_grid.png")],
           "docs/results/ab_simulation.json": [("runs/results/ab-sim/timeline.png", "docs/img/ab-sim.png")],
           "docs/results/guidance_sweep.json": [("runs/results/guidance-sweep/guidance_sweep.png",
                                                 "docs/img/guidance_sweep.png")]}
# each benchmark suite writes its own JSON in place (benchmarks/run.py)
COMMANDS |= {f"benchmarks/results/{suite}.json": (["python", "-m", "benchmarks.run", "--only", suite],
                                                  f"benchmarks/results/{suite}.json") for suite in SUITES}
COMMANDS["benchmarks/results/serving-load.json"] = COMMANDS["benchmarks/results/serving.json"]
# the device check's CPU column (docs/SCALING.md): the same script a GPU machine runs, here on the CPU
COMMANDS["benchmarks/results/device-cpu.json"] = (
    ["bash", "-c", "scripts/device-check.sh prepare && scripts/device-check.sh"], "benchmarks/results/device-cpu.json")
#: JSON released with weights: their tables are rendered, but remaking them means retraining (about
#: 3 hours: scripts/train_demo_generator.sh), which is a release, not a measurement
RELEASED = {"ragar/weights/demo-generator/provenance.json"}
#: JSON measured on a lent GPU machine: rendered here, remade only there, by the command each records
#: (docs/SCALING.md's device check; docs/GENERATION.md's 128-px recipe and its evaluation, whose
#: generator came back from that machine and is not in the repository)
LENT = {
    "benchmarks/results/device-nvidia-h200.json": "bash scripts/device-check.sh --no-cpu (on the GPU machine)",
    "docs/results/recipe_128.json": "bash scripts/device-check.sh recipe /tmp/gen128 340 --steps 2000,800,1800",
    "docs/results/generation_128.json": "ragar eval generation --generator runs/gen128/pipeline (after the recipe)",
}


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", action="store_true", help="only rewrite the tables")
    ap.add_argument("--only", nargs="*", default=None,
                    help="rerun only these JSONs (docs/results/NAME.json, benchmarks/results/SUITE.json)")
    a = ap.parse_args(argv)
    cited = sorted({p for doc in documents() for m in blocks(doc.read_text()) for p in json_paths(m["json"])}
                   | set(a.only or []))
    # a table whose JSON no command remakes
    missing = [c for c in cited if c not in COMMANDS and c not in RELEASED and c not in LENT]
    if missing:
        sys.exit(f"no command registered for {missing} in scripts/results.py")
    if not a.tables:
        if not (ROOT / "runs/demo/rankers/rankers.json").exists():
            sys.exit("run `make demo` first: the results commands read runs/demo")
        bin_dir = Path(sys.executable).parent
        done: set[tuple[str, ...]] = set()
        for target in a.only if a.only is not None else [c for c in cited if c not in RELEASED | set(LENT)]:
            cmd, written = COMMANDS[target]
            if tuple(cmd) in done:  # one run writes both (the serving bench: its rows and its raw numbers)
                continue
            done.add(tuple(cmd))
            for needed, make in PREREQUISITES.get(target, []):
                if not (ROOT / needed).exists():
                    print("$", " ".join(make), flush=True)
                    subprocess.run([str(bin_dir / make[0]), *make[1:]], cwd=ROOT, check=True)
            print("$", " ".join(cmd), flush=True)
            scratch = (ROOT / written).parent
            if scratch.parent == ROOT / "runs/results":  # a fresh measurement: nothing resumed from an older run
                shutil.rmtree(scratch, ignore_errors=True)
            exe = cmd[0] if cmd[0] == "bash" else str(bin_dir / cmd[0])
            subprocess.run([exe, *cmd[1:]], cwd=ROOT, check=True, env={**os.environ, "PYTHON": sys.executable})
            if written != target:
                shutil.copyfile(ROOT / written, ROOT / target)
            for src, dst in FIGURES.get(target, []):
                shutil.copyfile(ROOT / src, ROOT / dst)
    for doc in documents():
        text = doc.read_text()
        new = rewrite(text, ROOT)
        if new != text:
            doc.write_text(new)
            print(f"rewrote the tables of {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
