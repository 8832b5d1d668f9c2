"""The personalized encoder: LoRA (peft) on EfficientNet-Lite0, infoNCE, save/load, registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ragar.encoders.efficientnet import EfficientNetLiteEncoder
from ragar.encoders.lora import (
    LoraTrainingConfig,
    PersonalizedEncoder,
    PersonalizedInfo,
    cached_prefix,
    info_nce,
    lora_model,
    save_personalized,
    tail_embedding,
    train_lora,
)
from ragar.encoders.registry import build_image_encoder


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_info_nce_matches_a_hand_computed_case():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])
    n = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # logits / t=1: [0.6, 0.0, -1.0]; loss = -log softmax[0]
    expect = -0.6 + np.log(np.exp(0.6) + np.exp(0.0) + np.exp(-1.0))
    assert info_nce(a, p, n, 1.0).item() == pytest.approx(expect, rel=1e-6)
    # a perfect positive far above every negative gives a loss near 0 at a low temperature
    assert info_nce(a, a, n, 0.01).item() < 1e-6


def test_untrained_lora_on_cached_prefix_is_the_base_encoder():
    cfg = LoraTrainingConfig(image_size=64)
    imgs = _images(5)
    model = lora_model(cfg)
    tail = tail_embedding(model, cached_prefix(model, imgs, cfg), cfg.first_block).detach().numpy()
    base = EfficientNetLiteEncoder(64).encode(imgs)
    np.testing.assert_allclose(tail, base, atol=1e-5)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].split("_blocks.")[-1].split(".")[0] for n in trainable if "_blocks." in n} == {
        str(i) for i in range(cfg.first_block, 16)}


def test_training_lowers_the_loss_and_save_load_round_trips(tmp_path):
    cfg = LoraTrainingConfig(image_size=64, steps=25, anchors_per_step=8, negatives_per_step=16, lr=3e-3)
    model = lora_model(cfg)
    pos = cached_prefix(model, _images(4, 1), cfg)
    neg = cached_prefix(model, _images(24, 2), cfg)
    model, losses = train_lora(pos, pos, neg, cfg, hard_order=np.arange(24), model=model)
    assert len(losses) == 25 and np.mean(losses[-5:]) < np.mean(losses[:5]) * 0.7
    save_personalized(model, tmp_path / "enc", PersonalizedInfo(image_size=64, name="obj"))
    assert {"adapter_config.json", "adapter_model.safetensors", "personalized.json"} <= {
        p.name for p in (tmp_path / "enc").iterdir()}
    enc = build_image_encoder(f"personalized:{tmp_path / 'enc'}")
    assert isinstance(enc, PersonalizedEncoder) and enc.dim == 1280
    imgs = _images(3, 3)
    with torch.no_grad():
        trained = tail_embedding(model, cached_prefix(model, imgs, cfg), cfg.first_block).numpy()
    np.testing.assert_allclose(enc.encode(imgs), trained, atol=1e-4)
    assert np.abs(enc.encode(imgs) - EfficientNetLiteEncoder(64).encode(imgs)).max() > 1e-3
    assert enc.fingerprint != EfficientNetLiteEncoder(64).fingerprint


def test_loading_refuses_what_is_not_a_personalized_encoder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no personalized encoder"):
        PersonalizedEncoder(tmp_path)
    cfg = LoraTrainingConfig(image_size=64, steps=1)
    save_personalized(lora_model(cfg), tmp_path / "e", PersonalizedInfo(image_size=64))
    info = json.loads((tmp_path / "e" / "personalized.json").read_text())
    (tmp_path / "e" / "personalized.json").write_text(json.dumps({**info, "colour": "red"}))
    with pytest.raises(ValueError, match=r"unknown keys.*colour"):
        PersonalizedEncoder(tmp_path / "e")


def test_training_needs_every_role():
    cfg = LoraTrainingConfig(image_size=64, steps=1)
    x = torch.zeros(2, 192, 1, 1)
    with pytest.raises(ValueError, match="needs anchors, positives and negatives"):
        train_lora(x, x, x[:0], cfg)
    with pytest.raises(ValueError):
        LoraTrainingConfig(first_block=17)
    with pytest.raises(ValueError, match="image_size"):
        LoraTrainingConfig(image_size=32)  # EfficientNet-Lite0 gives all-zero features for some 32-px inputs
