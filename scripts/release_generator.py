"""Release the generator that scripts/train_demo_generator.sh trained: its pipeline, in float16,
into ``ragar/weights/demo-generator``, with a ``provenance.json`` assembled from the records each
stage wrote (commands, configs, steps, losses, wall times) and the autoencoder's evaluation.

    python scripts/release_generator.py --out runs/gen19 --ae-eval runs/gen19/ae-eval/autoencoder.json \
        --note "..."

Why a script: the provenance of the previous releases was written by hand, and a hand-copied loss
or wall time is one nobody can check. Here every number comes from a file a run wrote.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (key in provenance.json, the stage's directory under --out, what it trains); provenance.json lists
#: them as ``stages``, which docs/GENERATION.md's stage table (eval.results_renderers) follows
STAGES = (("autoencoder", "autoencoder", "the autoencoder, from scratch on the world's renders"),
          ("autoencoder_decoder_stage", "autoencoder-robust",
           "its decoder again with latent noise (encoder frozen); it is the pipeline's vae"),
          ("generator_first_run", "generator-a", "the latent UNet on aligned pairs, on stage 1's latents: first run"),
          ("generator_stage", "generator", "the same UNet from the first run's EMA weights, fresh optimizer"))
#: what a released pipeline holds; everything else in the destination (provenance, sample grids) is replaced
COMPONENTS = ("unet", "adapter", "vae", "scheduler", "model_index.json")


def stage_records(out: Path) -> dict:
    """Each stage's ``training.json``, keyed as provenance.json keys it; a missing one is an error
    (a release names every stage it came from)."""
    recs = {}
    for key, folder, _ in STAGES:
        path = out / folder / "training.json"
        if not path.exists():
            raise SystemExit(f"{path} is missing: stage '{folder}' has not finished")
        recs[key] = json.loads(path.read_text())
    return recs


def commands(recs: dict) -> list[str]:
    """The command lines, in the order they ran, each after a comment that says what it trains."""
    lines = ["# after `make demo` (runs/demo/world: `ragar world build --size demo`, world seed 0); "
             "scripts/train_demo_generator.sh runs these stages"]
    for i, (key, _, what) in enumerate(STAGES, 1):
        lines += [f"# stage {i}: {what}", command_line(recs[key])]
    return lines


def command_line(rec: dict) -> str:
    """The command a stage ran, from its record. ``ragar train`` records its whole command line
    (with ``commit`` and ``date``, as every run record does); records written before it did hold the
    program name only, and the options apart (``params``: each value as text, the whole written as
    text by the oldest runs; read with ``ast.literal_eval``, which evaluates literals only), from
    which the command is rebuilt. Unset options and off flags are left out."""
    if "date" in rec:
        return rec["command"]
    params = rec.get("params") or {}
    if isinstance(params, str):
        params = ast.literal_eval(params)
    parts = [rec.get("command", "?")]
    for name, value in params.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value in (None, "None", "False", False, "[]"):
            continue
        if value in ("True", True):
            parts.append(flag)
        elif name == "set_":
            sets = ast.literal_eval(value) if isinstance(value, str) else value
            parts += [part for s in sets for part in ("--set", shlex.quote(s))]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def describe(key: str, what: str, recs: dict) -> str:
    """A stage's line in docs/GENERATION.md's table; the autoencoder's says its latent shape."""
    if key != "autoencoder":
        return what
    from ragar.generation.configs import AutoencoderConfig

    c = AutoencoderConfig(**recs[key]["config"])
    side = c.image_size // c.downscale
    return f"the autoencoder, {c.image_size} px to {side}x{side}x{c.latent_channels} latents, from scratch"


def save_pipeline(out: Path, dest: Path) -> None:
    """Stage 3's UNet and adapter (EMA weights) with stage 2's decoder as the ``vae``, in float16."""
    from ragar.generation.autoencoder import load_autoencoder
    from ragar.generation.pipeline import RagarPipeline

    for name in COMPONENTS:
        p = dest / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    for old in dest.glob("samples-*.png"):
        old.unlink()
    pipe = RagarPipeline.from_pretrained(out / "generator", scheduler="ddpm")
    pipe.register_modules(vae=load_autoencoder(out / "autoencoder-robust"))
    pipe.save_pretrained(dest, half=True)
    grids = sorted((out / "generator").glob("samples-*.png"), key=lambda p: int(p.stem.split("-")[1]))
    if grids:
        shutil.copy(grids[-1], dest / grids[-1].name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gen19"), help="the recipe's OUT")
    ap.add_argument("--dest", type=Path, default=ROOT / "ragar" / "weights" / "demo-generator")
    ap.add_argument("--ae-eval", type=Path, help="`ragar eval autoencoder`'s autoencoder.json for the shipped vae")
    ap.add_argument("--device", default="cpu, 2 cores (no GPU was lent)")
    ap.add_argument("--note", default="", help="what the records do not say (resumed runs, shared cores)")
    a = ap.parse_args(argv)
    recs = stage_records(a.out)
    doc = {"trained_by": commands(recs), "note": a.note, "device": a.device,
           "stages": [{"key": key, "what": describe(key, what, recs)} for key, _, what in STAGES], **recs}
    if a.ae_eval:
        doc["autoencoder_eval"] = json.loads(a.ae_eval.read_text())
    a.dest.mkdir(parents=True, exist_ok=True)
    save_pipeline(a.out, a.dest)
    (a.dest / "provenance.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"released {a.out} into {a.dest}")


if __name__ == "__main__":
    main()
