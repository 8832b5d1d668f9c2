"""The generator recipe on a borrowed GPU, inside a wall-clock budget: render the exported pairs,
train the autoencoder (then its decoder with latent noise and 1 - SSIM), train the UNet on its
latents, and save the pipeline in float16.

A GPU machine here is lent for minutes, with torch but not the project's data stack, so this runs
from ``ragar train export-pairs``'s files (:mod:`ragar.generation.portable`) with torch, diffusers,
pydantic and numpy alone. Step counts are fixed (``--steps``) or come from the budget: each stage
first times two short probes, then trains as many steps as its share of the budget allows
(recorded in ``recipe.json``). The stages are the CPU recipe's (``scripts/train_demo_generator.sh``)
without its epsilon-prediction detour: the UNet predicts v from its first step::

    ragar train export-pairs --data runs/demo/world --out .device/pairs --config render-128   # here
    python -m ragar.generation.recipe --pairs .device/pairs --out runs/gen128 --budget-s 330   # there
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from ragar.generation.autoencoder import train_autoencoder
from ragar.generation.configs import AutoencoderConfig, GeneratorConfig
from ragar.generation.portable import load_pairs, read_scenes, render_all
from ragar.generation.train import train_generator
from ragar.provenance import record_start, run_record

#: shares of the training budget: autoencoder, its decoder again, the UNet (rendering comes first)
SHARES = (0.22, 0.10, 0.68)
#: the share of a stage's time its training loop may take (setup, latent encoding and saving are not in the rate)
MARGIN = 0.85


def _rate(train, probe_steps: int) -> float:
    """Steady steps per second of ``train(steps, out)``: the marginal rate between a run of
    ``probe_steps`` and one of three times as many, each timed by the training loop's own clock.
    A single short run is mostly warm-up on a GPU: on an H200 a 30-step probe gave 3.9 steps/s for
    an autoencoder that then ran at 31 (issue #19's first GPU call), and the budget went unspent."""
    with tempfile.TemporaryDirectory() as d:
        a = train(probe_steps, Path(d) / "a")
        b = train(3 * probe_steps, Path(d) / "b")

    def secs(s: dict) -> float:
        return s.get("seconds_this_run", s.get("seconds"))

    extra = secs(b) - secs(a)
    return 2 * probe_steps / extra if extra > 0 else 3 * probe_steps / secs(b)


STAGES = ("autoencoder", "autoencoder-robust", "generator")
KEYS = ("first_loss", "final_loss", "psnr_held_out", "psnr_held_out_latent_noise_0.2", "seconds",
        "seconds_this_run", "scaling_factor")


class _Budget:
    """Step counts for the stages: fixed, or each stage's share of the time left (SHARES)."""

    def __init__(self, budget_s: float, probe_steps: int, min_steps: int, fixed_steps: list[int] | None):
        if fixed_steps is not None and len(fixed_steps) != len(STAGES):
            raise ValueError(f"--steps needs {len(STAGES)} counts ({', '.join(STAGES)}), got {fixed_steps}")
        self.t0, self.budget_s, self.probe_steps = time.perf_counter(), budget_s, probe_steps
        self.min_steps, self.fixed = min_steps, fixed_steps
        self.log: list[dict] = []

    def run(self, name: str, train, out: Path) -> dict:
        i = STAGES.index(name)
        entry: dict = {"stage": name}
        if self.fixed:
            steps = self.fixed[i]
        else:
            entry["probe_steps_per_s"] = rate = _rate(train, self.probe_steps)
            # this stage's share of what is left, less a margin for setup and saving (not in the rate)
            left = self.budget_s - (time.perf_counter() - self.t0)
            share = SHARES[i] / sum(SHARES[i:])
            steps = max(self.min_steps, int(rate * left * MARGIN * share))
        s = train(steps, out / name)
        entry.update(steps=steps, **{k: s[k] for k in KEYS if k in s})
        self.log.append(entry)
        print(json.dumps(entry, default=str), flush=True)
        return s


def run(pairs_dir: Path, out: Path, budget_s: float, device: str, workers: int | None = None,
        probe_steps: int = 30, min_steps: int = 10, fixed_steps: list[int] | None = None) -> dict:
    """Render, train the three stages and save ``out/pipeline`` (float16); returns ``recipe.json``."""
    from ragar.generation.pipeline import RagarPipeline

    budget = _Budget(budget_s, probe_steps, min_steps, fixed_steps)
    read = read_scenes(pairs_dir)
    doc, _, scenes = read
    ae_cfg = AutoencoderConfig(**doc["autoencoder"])
    gen_cfg = GeneratorConfig(**doc["generator"])
    size = gen_cfg.image_size
    targets, refs = render_all(scenes, size, workers)
    pairs = load_pairs(pairs_dir, size, rendered=(targets, refs), read=read)
    # the autoencoder learns every render the pairs hold (targets and references), shuffled
    images = torch.cat([targets, refs])[torch.randperm(2 * len(targets), generator=torch.Generator().manual_seed(0))]
    del targets, refs
    render_s = time.perf_counter() - budget.t0

    def ae(steps: int, where: Path, **kw) -> dict:
        return train_autoencoder(images, where, AutoencoderConfig(**{**ae_cfg.model_dump(), "steps": steps, **kw}),
                                 progress=False, device=device)

    def gen(steps: int, where: Path) -> dict:
        cfg = GeneratorConfig(**{**gen_cfg.model_dump(), "steps": steps, "autoencoder": str(out / STAGES[1]),
                                 "checkpoint_every": 10**9, "sample_every": steps})
        return train_generator(pairs, where, cfg, resume=False, progress=False, device=device)

    budget.run(STAGES[0], ae, out)
    # the decoder again, encoder frozen: robust to the sampler's latent errors, and 1 - SSIM keeps faint parts
    robust = {"init_from": str(out / STAGES[0]), "freeze_encoder": True, "decoder_noise": 0.4,
              "learning_rate": ae_cfg.learning_rate / 2, "ssim_weight": 1.0}
    budget.run(STAGES[1], lambda n, w: ae(n, w, **robust), out)
    budget.run(STAGES[2], gen, out)
    RagarPipeline.from_pretrained(out / STAGES[2]).save_pretrained(out / "pipeline", half=True)
    log = {"render_s": render_s, "pairs": len(pairs.targets), "image_size": size, "stages": budget.log,
           "seconds": time.perf_counter() - budget.t0, "budget_s": budget_s, "device": device,
           "card": torch.cuda.get_device_name() if str(device).startswith("cuda") else platform.processor(),
           "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "export": {k: v for k, v in doc.items() if k not in ("identities", "item_ids")}}
    (out / "recipe.json").write_text(json.dumps(log, indent=2, default=str))
    return log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, required=True, help="ragar train export-pairs's output")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=330.0, help="wall-clock seconds for everything")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: every core)")
    ap.add_argument("--probe-steps", type=int, default=30)
    ap.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="AE,ROBUST,GENERATOR steps instead of the budget's")
    a = ap.parse_args(argv)
    record_start()
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log = run(a.pairs, a.out, a.budget_s, a.device, a.workers, a.probe_steps, fixed_steps=a.steps)
    # what made it, for the docs' table (scripts/results.py cannot rerun a lent machine's run)
    log["provenance"] = run_record("python -m ragar.generation.recipe", argv)
    (a.out / "recipe.json").write_text(json.dumps(log, indent=2, default=str))
    print(f"recipe done in {log['seconds']:.0f} s (budget {a.budget_s:.0f} s) -> {a.out / 'pipeline'}")


if __name__ == "__main__":
    main()
