"""Steps/s of one generator training step under the variants the CPU speed-up was chosen from.

Run: ``python -m benchmarks.generator_training_speed`` (random data; the step's cost does not
depend on the pixels). Each variant is timed over the same number of steps after a warm-up.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from ragar.generation.adapter import AdapterConfig, PreferenceAdapter
from ragar.generation.train import GeneratorConfig, build_unet


def time_steps(cfg: GeneratorConfig, channels_last: bool, steps: int = 6, warmup: int = 2, dim: int = 1664) -> float:
    torch.manual_seed(0)
    unet = build_unet(cfg)
    adapter = PreferenceAdapter.from_sizes(AdapterConfig(dim, cfg.cross_attention_dim, cfg.adapter_tokens))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([*unet.parameters(), *adapter.parameters()], lr=1e-4)
    b, s = cfg.batch_size, cfg.image_size
    x = torch.randn(b, 3, s, s)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    ref, pref = torch.randn(b, dim), torch.randn(b, dim)
    t = torch.randint(1000, (b,))
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        cond = adapter(ref, pref)
        loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=cond).sample, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    base = dict(image_size=32, batch_size=32)
    before = dict(block_out_channels=[32, 64, 128], cross_attention_blocks=[True, True, False])
    variants = {
        "before: attention at 32+16 px, [32,64,128]": (
            GeneratorConfig(**base, **before), False),
        "channels-last": (
            GeneratorConfig(**base, **before), True),
        "attention only at 16+8 px, [32,64,128,128]": (
            GeneratorConfig(**base, block_out_channels=[32, 64, 128, 128],
                            cross_attention_blocks=[False, True, True, False]), False),
    }
    rows = []
    for name, (cfg, cl) in variants.items():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sps = time_steps(cfg, cl)
            rows.append({"variant": name, "threads": threads, "steps_per_s": round(sps, 3),
                         "params_M": round(sum(p.numel() for p in build_unet(cfg).parameters()) / 1e6, 2)})
            print(json.dumps(rows[-1]), flush=True)
    json.dump(rows, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
