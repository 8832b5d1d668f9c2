"""Export what the device check needs, so it runs on a GPU machine that has torch but not the rest.

Run here, in the full environment, after ``make demo``::

    python -m benchmarks.device_export --demo runs/demo --out .device

It writes into ``--out`` (ignored by git; the device tool carries it):

* ``inputs.safetensors``: for ``--requests`` sampled (user, reference) requests of the demo world,
  the reference and retrieval-weighted preference embeddings, the NearID embedding of each
  reference (identity scores), the torch ranker's per-user inputs (history positions, masks,
  stats, skips), the catalog tables the ranker reads, and ``--pairs`` generator training pairs;
* ``efficientnet-lite0.safetensors``: the image encoder's ImageNet weights in float16 (the weights
  package is 18 MB and cannot travel);
* ``din/``: the trained torch ranker; ``meta.json``: the generator recipe, encoder settings,
  commit, date and each file's size;
* ``wheels/``: the pure-Python packages (and pydantic-core's x86-64 build) that the GPU machine
  lacks, for Python ``--python`` (what ``scripts/device-check.sh`` installs there).

Everything else the check reads travels with the working tree (the shipped generator and NearID).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

#: what the device lacks and the check imports (pinned to this environment's versions)
WHEELS = ("diffusers", "efficientnet-lite-pytorch", "pydantic", "pydantic-core", "annotated-types",
          "typing-inspection", "starlette", "uvicorn", "importlib-metadata", "zipp")


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def download_wheels(out: Path, python: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{n}=={_version(n)}" for n in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", "-d", str(out),
           *(a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
             for a in ("--platform", p)), *pins]
    subprocess.run(cmd, check=True)
    return sorted(p.name for p in out.glob("*.whl"))


def export(demo: Path, out: Path, requests: int = 128, pairs: int = 128, seed: int = 0) -> dict:
    from ragar.config import load_config
    from ragar.generation.loading import personalizer_from_config
    from ragar.generation.train import make_pairs

    cfg = load_config("demo")
    world = demo / "world"
    p = personalizer_from_config(cfg, world, None, demo / "rankers")
    rng = np.random.default_rng(seed)
    users = sorted(p.known_users)
    users = [users[i] for i in rng.choice(len(users), requests, replace=len(users) < requests)]
    items = [p.catalog.ids[i] for i in rng.choice(len(p.catalog.ids), requests)]
    ref, _, _ = p.reference_vectors(items, [None] * requests)
    pref, _, _ = p.preference_embeddings(users, ref, "ragar")
    ui = p.scorer.user_inputs(users)
    ident_ref = np.stack([p._identity_of_reference(i, None) for i in items])
    # the references' pixels at the generator's size, in [-1, 1] (an image-conditioned generator reads them)
    ref_px = torch.from_numpy(np.stack(p.reference_pixels(items, [None] * requests))).permute(0, 3, 1, 2)
    ref_px = ref_px.float() / 127.5 - 1
    gp = make_pairs(world, p.catalog.ids, p.vectors, cfg.generator.image_size, cfg.preference, max_pairs=pairs,
                    seed=seed, style_pairs=cfg.generator.style_pairs, style_columns=cfg.generator.style_columns)
    t = torch.from_numpy
    tensors = {"reference": t(ref), "preference": t(pref), "identity_reference": t(ident_ref.astype(np.float32)),
               "hist_pos": ui.hist_pos, "mask": ui.mask, "stats": ui.stats, "skip_pos": ui.skip_pos,
               "skip_mask": ui.skip_mask, "image_table": p.scorer._image.half(),
               "combined_table": p.scorer._combined.half(), "train_targets": gp.targets.half(),
               "train_reference": gp.reference.half(), "train_preference": gp.preference.half(),
               "reference_images": ref_px.half(), "train_reference_images": gp.reference_images.half()}
    out.mkdir(parents=True, exist_ok=True)
    # float16 and int32 on the way (the check widens them back): the 64 MiB a call carries is tight
    small = {k: (v.half() if v.is_floating_point() else v.int() if v.dtype == torch.int64 else v).contiguous()
             for k, v in tensors.items()}
    save_file(small, str(out / "inputs.safetensors"))
    save_file({k: v.half().contiguous() for k, v in p.image_encoder.model.state_dict().items()},
              str(out / "efficientnet-lite0.safetensors"))
    p.scorer.model.save_pretrained(out / "din")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    meta = {"command": " ".join(sys.argv), "commit": commit, "date": datetime.now(timezone.utc).isoformat(),
            "world": str(world), "requests": requests, "pairs": len(gp.targets),
            "generator": cfg.generator.model_dump(), "generation": cfg.generation.model_dump(),
            "encoder_image_size": cfg.encoder.image_size, "identity_encoder": cfg.encoder.identity}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def carried_bytes(root: Path, bundle: Path) -> dict[str, int]:
    """What a device call carries: the working tree git tracks (plus untracked files it does not
    ignore) and the bundle."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((root / f.decode()).stat().st_size for f in files if f and (root / f.decode()).is_file())
    return {"tree": tree, "bundle": sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"))
    ap.add_argument("--out", type=Path, default=Path(".device"))
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (wheels are built per version)")
    ap.add_argument("--no-wheels", action="store_true")
    a = ap.parse_args(argv)
    if not (a.demo / "rankers" / "rankers.json").exists():
        sys.exit(f"{a.demo} has no trained rankers: run `make demo` first")
    export(a.demo, a.out, a.requests, a.pairs)
    if not a.no_wheels:
        download_wheels(a.out / "wheels", a.python)
    size = carried_bytes(Path.cwd(), a.out)
    mib = {k: v / 2**20 for k, v in size.items()}
    print(f"carried: working tree {mib['tree']:.1f} MiB + bundle {mib['bundle']:.1f} MiB = "
          f"{sum(mib.values()):.1f} MiB of the 64 MiB a device call may carry")
    if sum(size.values()) > 64 * 2**20:
        sys.exit("over the 64 MiB limit")


if __name__ == "__main__":
    main()
