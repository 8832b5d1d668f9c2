"""NearID: the two-tier loss on hand-made embeddings, triplets that follow the protocol, and the
CLI on the tiny world (trains, reports SSR for backbone and head, loads as ``nearid:<dir>``)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ragar.cli import app
from ragar.encoders.nearid import ssr_triplets, two_tier_loss, world_identity_split


def _u(v):
    return torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def test_two_tier_loss_orders_the_tiers():
    a, p = _u([1.0, 0.0]), _u([1.0, 0.0])
    good = two_tier_loss(a[None], p[None], _u([0.9, 0.1])[None, None], _u([0.0, 1.0])[None, None], 0.07, 0.1)
    # the distractor beats the positive: tier 1 is violated
    bad1 = two_tier_loss(a[None], _u([0.5, 0.5])[None], _u([1.0, 0.0])[None, None], _u([0.0, 1.0])[None, None],
                         0.07, 0.1)
    # a random negative beats the distractor: tier 2 is violated
    bad2 = two_tier_loss(a[None], p[None], _u([0.0, 1.0])[None, None], _u([0.9, 0.1])[None, None], 0.07, 0.1)
    assert good < bad1 and good < bad2
    assert good.item() == pytest.approx(
        torch.nn.functional.cross_entropy(torch.tensor([[1.0, 0.99388, 0.0]]) / 0.07, torch.tensor([0])).item(),
        abs=1e-3)


def test_triplets_follow_the_protocol(tiny_world):
    split = world_identity_split(tiny_world, holdout=0.5, seed=0)
    trip = ssr_triplets(split, split.held_out)
    assert len(trip["anchor"]) > 0
    for a, p, d in zip(trip["anchor"], trip["positive"], trip["distractor"], strict=True):
        assert split.identity[a] == split.identity[p] == split.identity[d] and a != p
        assert split.is_distractor[d] and not split.is_distractor[a] and not split.is_distractor[p]
        assert d in split.distractor_of[p]
    assert set(split.identity[trip["anchor"]].tolist()) <= split.held_out


def test_cli_trains_reports_and_loads(tiny_world, tmp_path):
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tiny_world), "--out", str(tmp_path),
                                 "--steps", "5", "--image-size", "64", "--holdout", "0.5"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ssr.json").read_text())
    names = [row["encoder"] for row in rep["rows"]]
    assert names == ["backbone (pooled features)", "NearID (backbone + head)"]
    assert all(0 <= row["ssr"] <= 1 for row in rep["rows"]) and rep["triplets"] > 0
    assert any(k.startswith("ssr[") for k in rep["rows"][0])
    from ragar.encoders.registry import build_image_encoder

    enc = build_image_encoder(f"nearid:{tmp_path}")
    emb = enc.encode([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 200, np.uint8)])
    assert emb.shape == (2, 256) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a world" in r.output
