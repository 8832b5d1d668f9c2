"""How much should a like weigh against a click in the preference? ``eval.history_purity`` for
each like weight, on demo-world requests drawn with seed 7 (the generation evaluation uses seed 0).

    python scripts/like_weight_sweep.py --out runs/results/like-weight   # about a minute after make demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.generation import sample_requests  # noqa: E402
from eval.history_purity import history_purity  # noqa: E402
from ragar.generation.loading import load_personalizer  # noqa: E402
from ragar.provenance import run_record  # noqa: E402
from recsys.world.oracle import World  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/demo/world")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--likes", default="1,1.5,4,10,30,100")
    ap.add_argument("--out", type=Path, default=Path("runs/results/like-weight"))
    a = ap.parse_args(argv)
    world = World(a.data)
    req = sample_requests(world, a.requests, seed=a.seed)
    p = load_personalizer(a.data, identity_encoder=None)
    ref = p.reference_vectors(req["reference_item_id"].to_list(), [None] * req.height)[0]
    hist = p.histories(req["user_id"].to_list()).tail(p.config.history_len)
    rows = []
    for like in (float(x) for x in a.likes.split(",")):
        cfg = p.preference.model_copy(update={"event_weights": {**p.preference.event_weights, "like": like}})
        rows.append({"like_weight": like, **history_purity(world, req, hist, p.vectors, ref, cfg)})
        print(rows[-1], flush=True)
    base = p.preference.model_copy(update={"method": "uniform"})
    rows.append({"like_weight": None, "method": "uniform", **history_purity(world, req, hist, p.vectors, ref, base)})
    a.out.mkdir(parents=True, exist_ok=True)
    out = {"requests": req.height, "seed": a.seed, "default_like_weight": p.preference.event_weights["like"],
           "rows": rows, "provenance": {**run_record("python scripts/like_weight_sweep.py", argv),
                                        "config": p.preference.model_dump()}}
    (a.out / "like_weight.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out / 'like_weight.json'}")


if __name__ == "__main__":
    main()
