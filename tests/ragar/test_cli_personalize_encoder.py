"""``ragar personalize-encoder`` and ``ragar eval personalized-encoder`` end to end on the tiny world
(a tiny generator, a few LoRA steps: mechanics, not quality), and their bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from ragar.cli import app, expand_list_options

runner = CliRunner()

SMALL = ["--config", "tiny",
         "--set", "personalize_encoder.data.augmentations=4", "--set", "personalize_encoder.data.pastes=4",
         "--set", "personalize_encoder.data.generated_positives=4",
         "--set", "personalize_encoder.data.generated_negatives=4",
         "--set", "personalize_encoder.data.num_inference_steps=2",
         "--set", "personalize_encoder.lora.steps=3", "--set", "personalize_encoder.lora.image_size=64",
         "--set", "personalize_encoder.lora.anchors_per_step=4",
         "--set", "personalize_encoder.lora.negatives_per_step=8"]


def _views_of_one_item(world) -> list[str]:
    v = pl.read_parquet(world / "views.parquet").filter(pl.col("kind") == "view")
    item = v["item_id"][0]
    return [str(world / p) for p in v.filter(pl.col("item_id") == item)["image"][:3]]


def test_images_after_one_flag_become_repeated_options():
    assert expand_list_options(["personalize-encoder", "--images", "a.png", "b.png", "c.png", "--out", "d"]) == [
        "personalize-encoder", "--images", "a.png", "--images", "b.png", "--images", "c.png", "--out", "d"]
    assert expand_list_options(["x", "-i", "a", "--images"]) == ["x", "-i", "a", "--images"]


def test_personalize_encoder_writes_an_encoder_the_identity_metrics_accept(tiny_models, tmp_path):
    world, gen = tiny_models["data"], tiny_models["generator"]
    imgs = _views_of_one_item(world)
    out = tmp_path / "my-mug"
    args = ["personalize-encoder", "--data", str(world), "--generator", str(gen), "--out", str(out), *SMALL]
    for p in imgs:
        args += ["--images", p]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    kinds = summary["training_images"]
    assert kinds["real"] == 3 and kinds["pasted"] == 4 and kinds["generated positives"] == 4
    renders = pl.read_parquet(world / "views.parquet").height
    assert kinds["generated negatives"] == 4 and kinds["real negatives"] == renders
    info = json.loads((out / "personalized.json").read_text())
    assert info["training"]["variant"] == "personalized" and info["image_size"] == 64
    assert "<img" in (out / "report.html").read_text()
    # the identity-ranking metrics take it as an encoder spec
    v = pl.read_parquet(world / "views.parquet")
    gal = pl.DataFrame({"image": v["image"], "identity": v["identity_id"]})
    gal.write_csv(world / "gallery.csv")
    q = pl.DataFrame({"image": v["image"][:4], "identity": v["identity_id"][:4]})
    q.write_csv(world / "queries.csv")
    r = runner.invoke(app, ["eval", "fpr", "--gallery", str(world / "gallery.csv"), "--queries",
                            str(world / "queries.csv"), "--encoder", f"personalized:{out}", "--out",
                            str(tmp_path / "fpr")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "fpr" / "fpr.json").read_text())
    assert res["encoder"] == f"personalized:{out}" and res["r@1"] == pytest.approx(1.0)  # queries are in the gallery


def test_personalize_encoder_bad_input(tiny_models, tmp_path):
    world = tiny_models["data"]
    imgs = _views_of_one_item(world)
    base = ["personalize-encoder", "--data", str(world), "--out", str(tmp_path / "e"), *SMALL]
    r = runner.invoke(app, base)
    assert r.exit_code == 2 and "--images" in r.output  # fewer than 1 image
    text = tmp_path / "readme.png"
    text.write_text("hello")
    r = runner.invoke(app, [*base, "--images", imgs[0], "--images", str(text)])
    assert r.exit_code == 2 and "readme.png: not a readable image" in r.output
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(big)
    r = runner.invoke(app, [*base, "--images", imgs[0], "--images", str(big)])
    assert r.exit_code == 2 and "mixed sizes" in r.output
    r = runner.invoke(app, [*base, "--images", str(tmp_path / "missing.png")])
    assert r.exit_code == 2 and "not a file" in r.output
    r = runner.invoke(app, [*base, "--images", imgs[0], "--set", "personalize_encoder.lora.rank=zero"])
    assert r.exit_code == 2 and "personalize_encoder.lora.rank" in r.output
    assert not (tmp_path / "e").exists()  # nothing half-written


def test_eval_personalized_encoder_compares_three_encoders(tiny_models, tmp_path):
    world, gen = tiny_models["data"], tiny_models["generator"]
    out = tmp_path / "pe"
    r = runner.invoke(app, ["eval", "personalized-encoder", "--data", str(world), "--generator", str(gen),
                            "--identities", "2", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "personalized_encoder.json").read_text())
    assert res["identities"] == 2 and len(res["rows"]) == 2
    for row in res["rows"]:
        for enc in ("base", "real-only", "personalized"):
            assert 0 < row[f"{enc}/ndcg"] <= 1 and 0 < row[f"{enc}/pr_auc"] <= 1
        assert row["relevant"] >= 1
    assert {d["comparison"] for d in res["summary"]["differences"]} == {"personalized - base",
                                                                         "personalized - real-only"}
    assert (out / "report.html").exists() and len(list((out / "targets").glob("*.json"))) == 2
    r = runner.invoke(app, ["eval", "personalized-encoder", "--data", str(world), "--generator", str(gen),
                            "--identities", "50", "--out", str(out), *SMALL])
    assert r.exit_code == 2 and "holds out" in r.output


def test_the_personalized_recipe_runs_without_generated_views(tiny_models, tmp_path):
    """Pastes only, no generated positives or negatives: a setting of the LoRA sweep; it once crashed
    stacking zero generated references."""
    world, gen = tiny_models["data"], tiny_models["generator"]
    out = tmp_path / "no-generated"
    args = ["personalize-encoder", "--data", str(world), "--generator", str(gen), "--out", str(out), *SMALL,
            "--set", "personalize_encoder.data.generated_positives=0",
            "--set", "personalize_encoder.data.generated_negatives=0"]
    for p in _views_of_one_item(world):
        args += ["--images", p]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    kinds = json.loads((out / "summary.json").read_text())["training_images"]
    assert kinds["generated positives"] == 0 and kinds["generated negatives"] == 0 and kinds["pasted"] == 4
