"""NearID: the two-tier loss on hand-made embeddings, triplets that follow the protocol, and the
CLI on the tiny world (trains, reports SSR for backbone and head, loads as ``nearid:<dir>``)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ragar.cli import app
from ragar.encoders.nearid import (
    NearIDConfig,
    merge_splits,
    ssr_triplets,
    tokens_of,
    two_tier_loss,
    world_identity_split,
)


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
    assert names == ["backbone (pooled features)", "backbone (pooled, every level)", "NearID (backbone + head)"]
    assert rep["levels"] == ["block10", "block14", "head"] and rep["worlds"] == [str(tiny_world)]
    assert all(0 <= row["ssr"] <= 1 for row in rep["rows"]) and rep["triplets"] > 0
    assert any(k.startswith("ssr[") for k in rep["rows"][0])
    from ragar.encoders.registry import build_image_encoder

    enc = build_image_encoder(f"nearid:{tmp_path}")
    emb = enc.encode([np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 200, np.uint8)])
    assert emb.shape == (2, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a world" in r.output


def test_shared_negatives_with_a_mask_equal_per_anchor_negatives():
    g = torch.Generator().manual_seed(0)
    a, p, d, n = (torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)
                  for s in [(3, 8), (3, 8), (3, 1, 8), (5, 8)])
    valid = torch.tensor([[True, True, False, True, True], [True] * 5, [False, True, True, True, False]])
    shared = two_tier_loss(a, p, d, n, 0.07, 0.1, negative_mask=valid)
    # the same loss anchor by anchor, each with only its valid negatives
    each = [two_tier_loss(a[i:i + 1], p[i:i + 1], d[i:i + 1], n[valid[i]][None], 0.07, 0.1) for i in range(3)]
    assert shared.item() == pytest.approx(torch.stack(each).mean().item(), abs=1e-5)
    # leaving a negative out changes the loss (the mask is not ignored)
    assert shared.item() != pytest.approx(two_tier_loss(a, p, d, n, 0.07, 0.1).item(), abs=1e-4)


def test_tokens_of_reads_the_backbone_levels():
    from ragar.encoders.efficientnet import EfficientNetLiteEncoder

    enc = EfficientNetLiteEncoder(128)
    x = torch.randn(2, 3, 128, 128)
    b10, b14, head = tokens_of(enc, x, ("block10", "block14", "head"))
    assert b10.shape == (2, 64, 112) and b14.shape == (2, 16, 192) and head.shape == (2, 16, 1280)
    # the head level is exactly the encoder's own last feature map
    with torch.no_grad():
        ref = enc.model.extract_features(x).flatten(2).transpose(1, 2)
    assert torch.allclose(head, ref, atol=1e-5)
    with pytest.raises(ValueError, match="unknown backbone level 'block99'"):
        tokens_of(enc, x, ("block99",))
    with pytest.raises(ValueError, match="same length"):
        NearIDConfig(levels=("head",), feature_dims=(1280, 112), tokens=(16,))


def test_merge_splits_keeps_held_out_and_offsets(tiny_world):
    a = world_identity_split(tiny_world, holdout=0.5, seed=0)
    b = world_identity_split(tiny_world, holdout=0.5, seed=1)
    m = merge_splits(a, [b])
    n = len(a.paths)
    assert len(m.paths) == 2 * n and m.held_out == a.held_out
    # the second world's identities are new names, so none of them is held out
    assert all(str(i).startswith("x0/") for i in m.identity[n:]) and not set(m.identity[n:]) & m.held_out
    for pos, ds in m.distractor_of.items():
        assert all(m.is_distractor[d] and m.identity[d] == m.identity[pos] for d in ds)
    assert len(m.distractor_of) == 2 * len(a.distractor_of)


def test_cli_extra_worlds_train_the_head(tiny_world, tmp_path, tiny_config):
    from recsys.world.build import build_world

    extra = tmp_path / "extra"
    build_world(tiny_config.world.model_copy(update={"seed": 7}), extra, progress=False)
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tiny_world), "--out", str(tmp_path / "h"),
                                 "--extra-data", str(extra), "--steps", "5", "--image-size", "64",
                                 "--holdout", "0.5"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "h" / "ssr.json").read_text())
    alone = world_identity_split(tiny_world, holdout=0.5, seed=0)
    n_alone = len(set(alone.identity.tolist()) - alone.held_out)
    n_extra = len(set(world_identity_split(extra, holdout=0.5).identity.tolist()))
    assert rep["training_identities"] == n_alone + n_extra and rep["worlds"] == [str(tiny_world), str(extra)]
    # the held-out triplets are the main world's alone, as without --extra-data
    assert rep["triplets"] == len(ssr_triplets(alone, alone.held_out, 1)["anchor"])
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tiny_world), "--out", str(tmp_path / "x"),
                                 "--extra-data", str(tmp_path), "--steps", "1"])
    assert r.exit_code == 2 and "not a world" in r.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, ["train", "identity-encoder", "--data", str(tiny_world), "--out", str(tmp_path / "y"),
                                 "--levels", "block99", "--steps", "1", "--image-size", "64"])
    assert r.exit_code == 2 and "unknown backbone level" in r.output and not (tmp_path / "y").exists()


def test_the_shipped_encoder_keeps_its_whole_batch_bits_at_its_cpu_forward_batch(tiny_world, monkeypatch):
    """On a CPU the encoder and the token cache run a few images at a time (faster): at the 2
    threads every documented number was measured with, the vectors and the cached tokens the head
    trains on must be the bits of one whole-batch pass."""
    import copy

    import polars as pl

    from ragar.encoders.efficientnet import EfficientNetLiteEncoder
    from ragar.encoders.nearid import backbone_tokens
    from ragar.encoders.registry import build_image_encoder

    paths = [str(tiny_world / p) for p in pl.read_parquet(tiny_world / "views.parquet")["image"][:44]]
    split_enc = copy.copy(build_image_encoder("nearid:demo"))
    step = split_enc.cpu_forward_batch
    assert step == split_enc.backbone.cpu_forward_batch == 8 and len(paths) % step  # whole chunks and a partial one
    whole_enc = copy.copy(split_enc)
    whole_enc.cpu_forward_batch = None
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split, split_tokens = split_enc.encode(paths, batch_size=44), backbone_tokens(paths, 128)
        np.testing.assert_array_equal(split, whole_enc.encode(paths, batch_size=44))
        monkeypatch.setattr(EfficientNetLiteEncoder, "cpu_forward_batch", None)  # the token cache's backbone
        whole_tokens = backbone_tokens(paths, 128, batch_size=44)
        assert all(torch.equal(a, b) for a, b in zip(split_tokens, whole_tokens, strict=True))
    finally:
        torch.set_num_threads(threads)
