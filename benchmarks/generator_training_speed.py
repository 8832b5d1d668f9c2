"""Steps/s of one generator training step under the UNet variants its architecture was chosen from.

The shape is the shipped generator's, read from its vae's config (32x32 latents of the vae's channels,
the reference's latents concatenated), the preference adapter's cross-attention tokens, batch 32. The choice it records:
self-attention over the 1,024 positions of the full-resolution level was most of a step, so the
shipped UNet has attention only at the 16 and 8 levels (one more level, more parameters, faster).

    python -m benchmarks.generator_training_speed --out runs/results/unet-speed

Random data: a step's cost does not depend on the values. Each variant is timed over the same
number of steps after a warm-up, at 1 and at 2 threads, and the JSON records its provenance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ragar.generation.adapter import AdapterConfig, PreferenceAdapter
from ragar.generation.configs import GeneratorConfig
from ragar.generation.loading import DEMO_GENERATOR
from ragar.generation.train import build_unet
from ragar.provenance import record_start, run_record

#: the shipped vae's latent channels (a release that changes them changes the timed shape with it)
LATENT_CHANNELS = json.loads((DEMO_GENERATOR / "vae" / "config.json").read_text())["latent_channels"]
LATENT_SIZE = 32
BEFORE = dict(block_out_channels=[32, 64, 128], cross_attention_blocks=[True, True, False])
SHIPPED = dict(block_out_channels=[32, 64, 128, 128], cross_attention_blocks=[False, True, True, False])
#: name -> (UNet settings, channels-last)
VARIANTS = {
    "before: [32, 64, 128], attention at 32 and 16": (BEFORE, False),
    "+ channels-last": (BEFORE, True),
    "shipped: [32, 64, 128, 128], attention only at 16 and 8, channels-last": (SHIPPED, True),
}


def time_steps(cfg: GeneratorConfig, channels_last: bool, steps: int, warmup: int = 2, dim: int = 1664) -> float:
    """Steps/s of forward + backward + AdamW on one random batch of the shipped shape."""
    torch.manual_seed(0)
    unet = build_unet(cfg, LATENT_CHANNELS, LATENT_SIZE)
    adapter = PreferenceAdapter.from_sizes(AdapterConfig(dim, cfg.cross_attention_dim, cfg.adapter_tokens))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([*unet.parameters(), *adapter.parameters()], lr=1e-4)
    b = cfg.batch_size
    x = torch.randn(b, LATENT_CHANNELS * (2 if cfg.reference_image else 1), LATENT_SIZE, LATENT_SIZE)
    target = torch.randn(b, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref, pref = torch.randn(b, dim), torch.randn(b, dim)
    t = torch.randint(1000, (b,))
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        cond = adapter(ref, pref)
        loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=cond).sample, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    record_start()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("runs/results/unet-speed"))
    a = ap.parse_args(argv)
    rows = []
    for name, (unet, channels_last) in VARIANTS.items():
        cfg = GeneratorConfig(batch_size=32, reference_image=True, **unet)
        params = sum(p.numel() for p in build_unet(cfg, LATENT_CHANNELS, LATENT_SIZE).parameters())
        row = {"variant": name, "params_M": round(params / 1e6, 2)}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row[f"steps_per_s_{threads}"] = round(time_steps(cfg, channels_last, a.steps), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    shape = {"latents": [LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE], "reference_concatenated": True,
             "batch_size": 32, "steps_timed": a.steps}
    config = {name: GeneratorConfig(batch_size=32, reference_image=True, **unet).model_dump(mode="json")
              for name, (unet, _) in VARIANTS.items()}
    result = {"rows": rows, "shape": shape,
              "provenance": {**run_record("python -m benchmarks.generator_training_speed", argv), "config": config}}
    (a.out / "unet_speed.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out / 'unet_speed.json'}")


if __name__ == "__main__":
    main()
