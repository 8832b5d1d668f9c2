"""Portable training pairs: exported as scenes and preference mixtures, rendered back where the
training runs into exactly the pairs make_pairs renders here."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from ragar.generation.pairs import make_pairs
from ragar.generation.portable import load_pairs, mixtures, read_scenes, save_pairs


@pytest.fixture(scope="module")
def catalog(tiny_world):
    items = pl.read_parquet(tiny_world / "items.parquet")
    rng = np.random.default_rng(0)
    # more dimensions than items, as the real catalog has (768 items, 1664 dims): mixtures are unique
    vec = rng.normal(size=(items.height, items.height + 16)).astype(np.float32)
    return items["item_id"].to_numpy(), vec


@pytest.fixture(scope="module")
def exported(tiny_world, catalog, tmp_path_factory):
    ids, vec = catalog
    plan = make_pairs(tiny_world, ids, vec, image_size=16, style_pairs=0.5, render_images=False)
    out = tmp_path_factory.mktemp("portable")
    save_pairs(plan, ids, vec, out, meta={"generator": {"image_size": 16}})
    return plan, out


def test_plan_carries_scenes_not_images(exported):
    plan, _ = exported
    assert plan.targets is None and plan.reference_images is None
    assert len(plan.scenes) == len(plan.preference) > 10


def test_rendered_back_equals_make_pairs(tiny_world, catalog, exported):
    ids, vec = catalog
    here = make_pairs(tiny_world, ids, vec, image_size=16, style_pairs=0.5)
    there = load_pairs(exported[1], 16, workers=2)
    assert torch.equal(there.targets, here.targets)  # the same draws, the same pixels
    assert torch.equal(there.reference_images, here.reference_images)
    assert torch.equal(there.style_pair, here.style_pair)
    assert there.reference_items == here.reference_items
    # the catalog travels in float16: the preference is the same mixture, to float16's precision
    cos = torch.nn.functional.cosine_similarity(there.preference, here.preference)
    assert cos.min() > 0.9999
    torch.testing.assert_close(there.reference, here.reference, rtol=2e-3, atol=2e-3)


def test_renders_at_any_size(exported):
    p = load_pairs(exported[1], 32, workers=1)
    assert p.targets.shape[1:] == (3, 32, 32) and p.reference_images.shape == p.targets.shape
    assert p.targets.min() >= -1 and p.targets.max() <= 1


def test_export_is_small_and_self_describing(exported):
    _, out = exported
    doc = json.loads((out / "pairs.json").read_text())
    assert doc["format"] == "ragar-portable-pairs/1" and doc["generator"] == {"image_size": 16}
    assert 1 <= doc["mix"] <= 64
    _, t, scenes = read_scenes(out)
    assert t["catalog"].dtype == torch.float16 and len(scenes) == doc["pairs"]


def test_mixtures_recover_sparse_weights():
    rng = np.random.default_rng(1)
    cat = rng.normal(size=(30, 50))
    coef = np.zeros((5, 30))
    for r in range(5):
        coef[r, rng.choice(30, 3, replace=False)] = rng.random(3)
    rows, w = mixtures(torch.from_numpy(coef @ cat).float(), cat)
    for r in range(5):
        got = dict(zip(rows[r].tolist(), w[r].tolist(), strict=True))
        for i in np.flatnonzero(coef[r]):
            assert got[i] == pytest.approx(coef[r, i], rel=1e-3)


def test_a_preference_outside_the_catalog_is_refused():
    rng = np.random.default_rng(2)
    cat = rng.normal(size=(10, 40))
    with pytest.raises(ValueError, match="not a mixture"):
        mixtures(torch.from_numpy(rng.normal(size=(2, 40))).float(), cat)


def test_pairs_without_scenes_are_refused(tiny_world, catalog, tmp_path):
    ids, vec = catalog
    rendered = make_pairs(tiny_world, ids, vec, image_size=16, max_pairs=5)
    rendered.scenes = None
    with pytest.raises(ValueError, match="no scenes"):
        save_pairs(rendered, ids, vec, tmp_path)


def test_wrong_format_is_refused(exported, tmp_path):
    doc = json.loads((exported[1] / "pairs.json").read_text())
    (tmp_path / "pairs.json").write_text(json.dumps({**doc, "format": "something-else"}))
    with pytest.raises(ValueError, match="is not ragar-portable-pairs/1"):
        read_scenes(tmp_path)


def test_cli_exports_with_the_configs_settings(tiny_world, tmp_path):
    from typer.testing import CliRunner

    from ragar.cli import app

    out = tmp_path / "pairs"
    r = CliRunner().invoke(app, ["train", "export-pairs", "--data", str(tiny_world), "--out", str(out),
                                 "--config", "tiny", "--max-pairs", "30", "--set", "generator.image_size=16"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "pairs.json").read_text())
    assert doc["pairs"] == 30 and doc["generator"]["image_size"] == 16 and "autoencoder" in doc
    assert doc["provenance"]["preference"]["event_weights"]["like"] == 10.0
    assert doc["provenance"]["params"]["max_pairs"] == 30 and doc["provenance"]["command"].startswith("ragar ")
    p = load_pairs(out, 16, workers=1)
    assert len(p.targets) == 30 and p.preference.shape == p.reference.shape
    # not a world: a clear error, nothing written
    r = CliRunner().invoke(app, ["train", "export-pairs", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not a world" in r.output and not (tmp_path / "x").exists()
    # a style column the catalog lacks: named
    r = CliRunner().invoke(app, ["train", "export-pairs", "--data", str(tiny_world), "--out", str(tmp_path / "y"),
                                 "--config", "tiny", "--set", "generator.style_pairs=0.5",
                                 "--set", "generator.style_columns=[palette, colour]"])
    assert r.exit_code == 2 and "colour" in r.output and not (tmp_path / "y").exists()
