"""Guidance scales against issue #19's identity and preference bars, on the shipped generator.

``ragar eval generation`` renders five methods a setting; this renders RAGAR's row alone for each
(reference, preference) guidance pair, on the same requests and seeds, and adds the perfect answer
once (the ceiling NearID cos is read against), and draws the first requests of every setting in one
grid (``guidance_sweep.png``) to look at beside the numbers. Each setting is compared with the first one (the
shipped scales) per request, so the differences carry paired bootstrap intervals.

    python scripts/guidance_sweep.py --requests 60 --scales 3,6 5,6 3,4 5,8 4,5 2,6 2,4 \
        --out runs/results/guidance-sweep
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragar.provenance import record_start, run_record  # noqa: E402

GRID = 10  # requests shown in the image grid
COLUMNS = ("identity_cos", "parts_kept", "category_kept", "utility", "ideal_palette")


def _pair(text: str) -> tuple[float, float]:
    ref, pref = (float(x) for x in text.split(","))
    return ref, pref


def main(argv: list[str] | None = None) -> dict:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("runs/demo/world"))
    ap.add_argument("--rankers", type=Path, default=Path("runs/demo/rankers"))
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--scales", type=_pair, nargs="+", default=[(3.0, 6.0), (5.0, 6.0), (3.0, 4.0), (5.0, 8.0)],
                    help="reference,preference pairs; the first is the one the others are compared with")
    ap.add_argument("--config", default="demo")
    ap.add_argument("--out", type=Path, default=Path("runs/results/guidance-sweep"))
    a = ap.parse_args(argv)

    from eval.generation import PERFECT_ROW, Method, evaluate_generation, sample_requests
    from eval.metrics.intervals import paired_bootstrap_ci
    from ragar.cli.common import _personalizer, get_config, get_runtime
    from ragar.generation.loading import DEMO_ATTRIBUTE_READER
    from recsys.world.attributes import AttributeReader
    from recsys.world.oracle import World

    cfg = get_config(a.config, None, None)
    world = World(a.data)
    rt = get_runtime(cfg)
    reader = AttributeReader.from_pretrained(DEMO_ATTRIBUTE_READER).to(rt.device, rt.dtype)
    personalizer = _personalizer(cfg, a.data, None, a.rankers)
    requests = sample_requests(world, a.requests, 0)
    per, rows, grid = {}, [], {}
    for i, (ref, pref) in enumerate(a.scales):
        personalizer.config = cfg.generation.model_copy(
            update={"reference_guidance_scale": ref, "preference_guidance_scale": pref})
        name = f"ragar ({ref:g}, {pref:g})"
        res = evaluate_generation(world, reader, [Method(name, personalizer, "ragar")], requests,
                                  ideal_item_row=False)
        per[name] = res["per_request"][name]
        grid[name] = res["images"][name][:GRID]
        found = {r["method"]: r for r in res["rows"]}  # means and 95% intervals, as the evaluation's table has them
        if i == 0:
            per[PERFECT_ROW] = res["per_request"][PERFECT_ROW]
            grid = {"reference": _references(world, requests), PERFECT_ROW: res["images"][PERFECT_ROW][:GRID],
                    name: grid[name]}
            rows.append({**found[PERFECT_ROW], "scales": None})
        rows.append({**found[name], "scales": (ref, pref)})
    first = f"ragar ({a.scales[0][0]:g}, {a.scales[0][1]:g})"
    diffs = [{"method": n, "versus": first, "metric": k,
              **dict(zip(("diff", "lo", "hi"), paired_bootstrap_ci(np.asarray(per[n][k], float),
                                                                     np.asarray(per[first][k], float)), strict=True))}
             for n in per if n not in (first, PERFECT_ROW) for k in COLUMNS]
    out = {"requests": a.requests, "rows": rows, "differences": diffs,
           "provenance": {**run_record("python scripts/guidance_sweep.py", argv),
                          "config": {"generation": cfg.generation.model_dump(), "scales": a.scales}}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "guidance_sweep.json").write_text(json.dumps(out, indent=2))
    _grid_image(grid).save(a.out / "guidance_sweep.png")
    for r in rows:
        print(r["method"], " ".join(f"{k} {r[k]['mean']:.3f}" for k in COLUMNS))
    return out


def _references(world, requests) -> np.ndarray:
    from recsys.data.images import load_rgb

    paths = dict(zip(world.items["item_id"], world.items["image"], strict=True))
    return np.stack([load_rgb(world.root / paths[i]) for i in requests["reference_item_id"].head(GRID)])


def _grid_image(rows: dict[str, np.ndarray], scale: int = 3):
    """One row per setting (the reference and the perfect answer first), the first requests across,
    each image scaled up so a person can judge it; the row's name on its left."""
    from PIL import Image, ImageDraw

    side = next(iter(rows.values())).shape[1] * scale
    label = 170
    cols = max(len(images) for images in rows.values())
    img = Image.new("RGB", (label + cols * side, len(rows) * side), "white")
    draw = ImageDraw.Draw(img)
    for r, (name, images) in enumerate(rows.items()):
        draw.text((6, r * side + side // 2 - 6), name.replace(" (world render)", ""), fill="black")
        for c, im in enumerate(images):
            tile = Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((side, side), Image.NEAREST)
            img.paste(tile, (label + c * side, r * side))
    return img


if __name__ == "__main__":
    main()
