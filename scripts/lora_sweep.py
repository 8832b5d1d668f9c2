"""How the personalized encoder's LoRA defaults were chosen (docs/PERSONALIZED_ENCODER.md's sweep).

One run of ``ragar eval personalized-encoder`` per setting, on the first 8 held-out identities (the
ones the defaults were tuned on; the 24-identity table above the sweep gives the other 16 too).
Each run trains a LoRA on the 3 real images alone and one on the full training set, so one run
gives the base encoder, the real-only row and the row of its setting.

    python scripts/lora_sweep.py --out runs/results/lora-sweep
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragar.provenance import record_start, run_record  # noqa: E402

NO_GENERATED = ["personalize_encoder.data.generated_positives=0", "personalize_encoder.data.generated_negatives=0"]
HEAVY = ["personalize_encoder.lora.first_block=14", "personalize_encoder.lora.steps=60"]
#: name -> (what the row says, --set overrides); "default" is the shipped configuration
RUNS = {
    "heavy": ("blocks 14–15, lr 5e-4, 60 steps", HEAVY),
    "heavy-no-generated": ("blocks 14–15, lr 5e-4, 60 steps", [*HEAVY, *NO_GENERATED]),
    "heavy-fast-no-generated": ("blocks 14–15, lr 2e-3, 60 steps",
                                [*HEAVY, "personalize_encoder.lora.lr=0.002", *NO_GENERATED]),
    "default": ("block 15, lr 5e-4, 30 steps (default)", []),
}


def _means(rep: dict, encoder: str) -> dict:
    return {m: float(np.mean([r[f"{encoder}/{m}"] for r in rep["rows"]])) for m in ("ndcg", "pr_auc")}


def main(argv: list[str] | None = None) -> None:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("runs/demo/world"))
    ap.add_argument("--identities", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/results/lora-sweep"))
    ap.add_argument("--resume", action="store_true", help="read a setting's run from OUT when it finished there "
                                                          "(same command) instead of running it again")
    a = ap.parse_args(argv)
    bin_dir = Path(sys.executable).parent
    rows, config = [], {}
    for name, (setting, sets) in RUNS.items():
        cmd = ["ragar", "eval", "personalized-encoder", "--data", str(a.data), "--identities", str(a.identities),
               "--config", "demo", *[x for s in sets for x in ("--set", s)], "--out", str(a.out / name)]
        done = a.out / name / "personalized_encoder.json"
        if not (a.resume and done.exists() and json.loads(done.read_text())["provenance"]["command"] == " ".join(cmd)):
            print("$", " ".join(cmd), flush=True)
            subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, check=True)
        rep = json.loads(done.read_text())
        config[name] = rep["settings"]
        generated = rep["settings"]["data"]["generated_positives"] > 0
        if name == "heavy":  # the base encoder and the LoRA on the real images alone, at this setting
            rows += [{"run": name, "setting": "none (base encoder)", "positives": None, **_means(rep, "base")},
                     {"run": name, "setting": setting, "positives": "real only", **_means(rep, "real-only")}]
        rows.append({"run": name, "setting": setting, "default": name == "default",
                     "positives": "real + pastes + generated (+ generated negatives)" if generated
                     else "real + pastes (no generated negatives)", **_means(rep, "personalized"),
                     "command": " ".join(cmd)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"rows": rows, "identities": a.identities,
           "provenance": {**run_record("python scripts/lora_sweep.py", argv), "config": config}}
    (a.out / "lora_sweep.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out / 'lora_sweep.json'}")


if __name__ == "__main__":
    main()
