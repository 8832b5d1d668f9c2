"""Reconstruction quality of two generator autoencoders on the same fresh scenes, each at its own
size: PSNR and the NearID identity cos between a render and its reconstruction, and a picture.

    python scripts/compare_autoencoders.py --a ragar/weights/demo-generator/vae --b runs/gen128/pipeline/vae \\
        --out runs/results/autoencoders

The scenes are catalog items in cameras drawn with ``--seed`` (not the views the autoencoders
trained on), rendered at each autoencoder's size by the world's renderer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragar.encoders.nearid import NearIDEncoder
from ragar.generation.autoencoder import decode, downscale_of, encode, load_autoencoder, psnr
from ragar.provenance import run_record
from recsys.world.build import draw_view, world_scenes
from recsys.world.render import render


def measure(vae_dir: str, size: int, scenes: list, nearid: NearIDEncoder) -> tuple[dict, np.ndarray, np.ndarray]:
    vae = load_autoencoder(vae_dir)
    imgs = np.stack([render(i, s, v, size) for i, s, v in scenes])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = decode(vae, encode(vae, x))
    p = psnr(rec, x).numpy()
    rec8 = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    cos = (nearid.encode(list(imgs)) * nearid.encode(list(rec8))).sum(1)
    row = {"autoencoder": vae_dir, "image_size": size, "latent": size // downscale_of(vae),
           "psnr_mean": float(p.mean()), "psnr_min": float(p.min()),
           "identity_cos_mean": float(cos.mean()), "identity_cos_median": float(np.median(cos)),
           "identity_cos_p5": float(np.percentile(cos, 5))}
    return row, imgs, rec8


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="an autoencoder directory")
    ap.add_argument("--a-size", type=int, default=64, help="the size it was trained at")
    ap.add_argument("--b", required=True)
    ap.add_argument("--b-size", type=int, default=128)
    ap.add_argument("--world", default="runs/demo/world")
    ap.add_argument("--scenes", type=int, default=128)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--out", type=Path, default=Path("runs/results/autoencoders"))
    a = ap.parse_args(argv)
    sc = world_scenes(a.world)
    keys = sorted(sc)
    rng = np.random.default_rng(a.seed)
    scenes = [(sc[keys[i]][0], sc[keys[i]][1], draw_view(rng)) for i in rng.choice(len(keys), a.scenes, replace=False)]
    nearid = NearIDEncoder("ragar/weights/demo-nearid")
    rows, tiles = [], []
    for d, size in ((a.a, a.a_size), (a.b, a.b_size)):
        row, imgs, rec = measure(d, size, scenes, nearid)
        rows.append(row)
        z = 128 // imgs.shape[1]
        for batch in (imgs[:8], rec[:8]):  # renders above their reconstructions, shown at 128 px
            tiles.append(np.concatenate([np.kron(t, np.ones((z, z, 1), np.uint8)) for t in batch], 1))
    a.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 0)).save(a.out / "reconstructions.png")
    res = {"scenes": a.scenes, "seed": a.seed, "rows": rows,
           "provenance": run_record("python scripts/compare_autoencoders.py", argv)}
    (a.out / "autoencoders.json").write_text(json.dumps(res, indent=2))
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
