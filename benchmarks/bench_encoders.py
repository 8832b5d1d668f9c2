"""Embedding throughput of each encoder (images/s, texts/s) on world renders."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.harness import Row, timeit
from ragar.encoders.registry import build_image_encoder, build_text_encoder
from recsys.world.render import CATEGORIES, Identity, Style, View, render


def _images(n: int, size: int = 64) -> list[np.ndarray]:
    cats = list(CATEGORIES)
    return [render(Identity(cats[i % 8], 0.5, 0.5, tuple((p, 0) for p in CATEGORIES[cats[i % 8]])),
                   Style(i % 6, i % 4, i % 2), View(0, 0.9, 0, i % 6, 0), size) for i in range(n)]


def _clip_b32_random(tmp: str) -> str:
    """CLIP ViT-B/32 architecture, randomly initialised: speed does not depend on the weights."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig(projection_dim=512, vision_config={"image_size": 224, "patch_size": 32}))\
        .save_pretrained(tmp)
    return tmp


def run(quick: bool = False) -> list[Row]:
    import tempfile

    n = 32 if quick else 128
    imgs = _images(n)
    rows = []
    base = build_image_encoder("efficientnet-lite0", 224)
    t_base = timeit(lambda: base.encode(imgs, batch_size=32), repeat=1)
    rows.append(Row("encoders", "efficientnet-lite0@224 images/s", n / t_base, "img/s"))
    small = build_image_encoder("efficientnet-lite0", 128)
    t = timeit(lambda: small.encode(imgs, batch_size=32), repeat=1)
    rows.append(Row("encoders", "efficientnet-lite0@128 images/s", n / t, "img/s",
                    "efficientnet-lite0@224", n / t_base))
    with tempfile.TemporaryDirectory() as d:
        clip = build_image_encoder(f"clip:{_clip_b32_random(d)}")
        t = timeit(lambda: clip.encode(imgs, batch_size=32), repeat=1)
        rows.append(Row("encoders", "clip-vit-b32@224 images/s", n / t, "img/s", "efficientnet-lite0@224",
                        n / t_base))
    with tempfile.TemporaryDirectory() as d:
        from ragar.encoders.contrastive import SmallConvConfig, SmallConvNet

        torch.manual_seed(0)
        SmallConvNet(SmallConvConfig()).eval().save_pretrained(d)  # architecture, random weights
        small = build_image_encoder(f"contrastive:{d}")
        t = timeit(lambda: small.encode(imgs, batch_size=32), repeat=1)
        rows.append(Row("encoders", "contrastive small CNN@64 images/s", n / t, "img/s", "efficientnet-lite0@224",
                        n / t_base))
    text = build_text_encoder("minilm")
    titles = [f"glossy red striped mug with a lid number {i}" for i in range(n * 4)]
    t = timeit(lambda: text.encode(titles, batch_size=64), repeat=1)
    rows.append(Row("encoders", "minilm texts/s", len(titles) / t, "txt/s", "efficientnet-lite0@224 img/s",
                    n / t_base))
    return rows
