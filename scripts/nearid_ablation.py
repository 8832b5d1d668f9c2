"""What got the NearID identity encoder to its Sample Success Rate (docs/EVALUATION.md's ablation).

Four runs of ``ragar train identity-encoder``, same split and seed, one per row: the head reading the
head conv alone or blocks 10, 14 and the head conv, trained on the demo world's training identities
alone or with every identity of a second world (seed 101). SSR is measured on the demo world's
held-out identities in each; the backbone rows (no head) come from the shipped recipe's run.

    python scripts/nearid_ablation.py --out runs/results/nearid-ablation

The shipped recipe runs first: it computes every level's backbone tokens once (cached per world
under ``.ragar_cache/``), and the other three runs read them from there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragar.provenance import record_start, run_record  # noqa: E402

#: name -> (levels, with the second world); the shipped recipe first (see the module docstring)
RUNS = {
    "shipped": ("block10,block14,head", True),
    "head-demo": ("head", False),
    "levels-demo": ("block10,block14,head", False),
    "head-extra": ("head", True),
}


def command(name: str, data: Path, extra: Path, out: Path) -> list[str]:
    levels, with_extra = RUNS[name]
    return ["ragar", "train", "identity-encoder", "--data", str(data), *(["--extra-data", str(extra)] if with_extra
                                                                        else []),
            "--levels", levels, "--out", str(out / name)]


def main(argv: list[str] | None = None) -> None:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("runs/demo/world"))
    ap.add_argument("--extra-data", type=Path, default=Path("runs/nearid-extra/w101"))
    ap.add_argument("--out", type=Path, default=Path("runs/results/nearid-ablation"))
    a = ap.parse_args(argv)
    for w in (a.data, a.extra_data):
        if not (w / "views.parquet").exists():
            sys.exit(f"{w} is not a world directory (see docs/EVALUATION.md for the command that builds it)")
    bin_dir = Path(sys.executable).parent
    rows = []
    for name, (levels, with_extra) in RUNS.items():
        cmd = command(name, a.data, a.extra_data, a.out)
        print("$", " ".join(cmd), flush=True)
        subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], cwd=ROOT, check=True)
        rep = json.loads((a.out / name / "ssr.json").read_text())
        by = {r["encoder"]: r["ssr"] for r in rep["rows"]}
        if name == "shipped":  # the backbone alone, on the same triplets
            rows += [{"run": f"backbone: {k}", "levels": levels, "head": False, "training_identities": 0,
                      "ssr": v, "command": " ".join(cmd)} for k, v in by.items() if k.startswith("backbone")]
        rows.append({"run": name, "levels": levels, "head": True, "second_world": with_extra,
                     "training_identities": rep["training_identities"], "ssr": by["NearID (backbone + head)"],
                     "final_loss": rep["final_loss"], "seconds": rep["seconds"], "command": " ".join(cmd)})
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (r["head"], r.get("second_world", False), r["levels"] != "head"))
    out = {"rows": rows, "held_out_identities": rep["held_out_identities"], "triplets": rep["triplets"],
           "steps": rep["steps"], "seed": rep["seed"],
           "provenance": {**run_record("python scripts/nearid_ablation.py", argv),
                          "config": {name: {"levels": levels, "second_world": extra, "steps": rep["steps"],
                                            "image_size": rep["image_size"], "seed": rep["seed"]}
                                     for name, (levels, extra) in RUNS.items()}}}
    (a.out / "nearid_ablation.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out / 'nearid_ablation.json'}")


if __name__ == "__main__":
    main()
