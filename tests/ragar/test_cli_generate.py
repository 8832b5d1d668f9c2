"""`ragar generate`, `ragar train attribute-reader` and `ragar eval generation` on the tiny world."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.generation import IDEAL_ITEM_ROW, PERFECT_AE_ROW, PERFECT_ROW
from ragar.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def gen_args(tiny_models):
    return ["--data", str(tiny_models["data"]), "--generator", str(tiny_models["generator"]),
            "--rankers", str(tiny_models["rankers"]), "--config", "tiny"]


def test_generate_writes_images_page_and_scores(gen_args, tmp_path):
    r = runner.invoke(app, ["generate", "--user", "u000001", "--reference", "mug-00000-s10", "--n", "3",
                            "--out", str(tmp_path), *gen_args])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "result.json").read_text())
    assert len(res["candidates"]) == 3 and sorted(p.name for p in tmp_path.glob("candidate-*.png")) == [
        "candidate-0.png", "candidate-1.png", "candidate-2.png"]
    assert res["fallback"] is None and abs(sum(h["weight"] for h in res["history"]) - 1) < 1e-5
    page = (tmp_path / "index.html").read_text()
    assert "History" in page and "Candidates" in page and page.count("<img") >= 4


def test_generate_unknown_user_falls_back_and_says_so(gen_args, tmp_path):
    r = runner.invoke(app, ["generate", "--user", "nobody", "--reference", "mug-00000-s10", "--n", "1",
                            "--out", str(tmp_path), *gen_args])
    assert r.exit_code == 0, r.output
    assert "fallback: unknown-user" in r.output
    assert json.loads((tmp_path / "result.json").read_text())["fallback"] == "unknown-user"


@pytest.mark.parametrize("extra, message", [
    (["--reference", "no-such-item"], "unknown item"),
    (["--reference", "mug-00000-s10", "--n", "99"], "between 1 and 16"),
    (["--reference", "mug-00000-s10", "--method", "best"], "unknown method"),
    ([], "exactly one of"),
])
def test_generate_errors(gen_args, tmp_path, extra, message):
    r = runner.invoke(app, ["generate", "--user", "u000001", "--out", str(tmp_path), *extra, *gen_args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "result.json").exists()


def test_generate_rejects_a_non_image(gen_args, tmp_path):
    bad = tmp_path / "ref.png"
    bad.write_text("this is not a png")
    r = runner.invoke(app, ["generate", "--user", "u000001", "--reference-image", str(bad), "--out",
                            str(tmp_path / "o"), *gen_args])
    assert r.exit_code == 2 and "not a readable image" in r.output


def test_generate_without_generator_weights(tiny_models, tmp_path):
    r = runner.invoke(app, ["generate", "--user", "u000001", "--reference", "mug-00000-s10", "--data",
                            str(tiny_models["data"]), "--generator", str(tmp_path), "--config", "tiny"])
    assert r.exit_code == 2 and "not a RAGAR generator" in r.output


@pytest.fixture(scope="module")
def reader(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    r = runner.invoke(app, ["train", "attribute-reader", "--data", str(tiny_models["data"]), "--out", str(out),
                            "--image-size", "16", "--epochs", "1"])
    assert r.exit_code == 0, r.output
    return out


def test_eval_generation_table(gen_args, tiny_models, reader, tmp_path):
    acc = json.loads((reader / "accuracy.json").read_text())["held_out_accuracy"]
    assert set(acc) >= {"category", "palette", "pattern", "finish", "parts"}
    # a second generator stands in for the rank-task one: the row appears
    r = runner.invoke(app, ["eval", "generation", *gen_args, "--reader", str(reader), "--requests", "6",
                            "--best-of", "2", "--rank-generator", str(tiny_models["generator"]),
                            "--set", "generation.num_inference_steps=5", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rep" / "generation.json").read_text())
    names = [row["method"] for row in res["rows"]]
    assert names == ["ragar", "uniform", "reference-only", "ragar + best-of-2", "ragar + rank task",
                     IDEAL_ITEM_ROW, PERFECT_ROW, "reference unchanged", "ideal style (ceiling)"]
    rows = {row["method"]: row for row in res["rows"]}
    # the generator with the oracle's ideal item as preference: scored like every method
    assert -1 <= rows[IDEAL_ITEM_ROW]["identity_cos"]["mean"] <= 1 and rows[IDEAL_ITEM_ROW]["ranker_fit"] is not None
    assert rows["reference unchanged"]["identity_cos"]["mean"] == pytest.approx(1.0)
    # the perfect answer is measured like a method: identity against the reference, ranker fit, the ideal palette
    perfect = rows[PERFECT_ROW]
    assert -1 <= perfect["identity_cos"]["mean"] < 1 and perfect["ranker_fit"] is not None
    # the ceiling is the best any style can do for these users
    assert all(rows["ideal style (ceiling)"]["utility"]["mean"] >= row["utility"]["mean"] - 1e-9
               for row in res["rows"])
    assert res["requests"] == 6 and (tmp_path / "rep" / "generation.html").exists()
    assert {d["versus"] for d in res["differences"]} == {"uniform", "reference-only"}


def test_a_latent_generator_is_measured_against_its_autoencoders_ceiling(tiny_models, reader, tmp_path):
    """The perfect answer, encoded and decoded by the generator's own autoencoder, is a row of its own."""
    from ragar.generation.autoencoder import train_autoencoder, world_renders
    from ragar.generation.configs import AutoencoderConfig
    from tests.conftest import TINY_GENERATOR

    data = tiny_models["data"]
    train_autoencoder(world_renders(data, 16), tmp_path / "ae", AutoencoderConfig(image_size=16, channels=8, steps=3,
                                                                                   batch_size=8), progress=False)
    ae = f"generator.autoencoder={tmp_path / 'ae'}"
    r = runner.invoke(app, ["train", "generator", "--data", str(data), "--out", str(tmp_path / "gen"), "--config",
                            "tiny", "--steps", "2", *TINY_GENERATOR, "--set", ae])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "generation", "--data", str(data), "--generator", str(tmp_path / "gen"),
                            "--rankers", str(tiny_models["rankers"]), "--config", "tiny", "--reader", str(reader),
                            "--requests", "4", "--best-of", "0", "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rep" / "generation.json").read_text())
    rows = {row["method"]: row for row in res["rows"]}
    assert list(rows).index(PERFECT_AE_ROW) == list(rows).index(PERFECT_ROW) + 1
    perfect, through = rows[PERFECT_ROW], rows[PERFECT_AE_ROW]
    assert through["ranker_fit"] is not None and -1 <= through["identity_cos"]["mean"] <= 1
    # three steps of training: the decoder loses the image, so the ceiling sits well below the render
    assert through["identity_cos"]["mean"] < perfect["identity_cos"]["mean"] - 0.05


def test_eval_generation_needs_a_world(gen_args, tmp_path):
    r = runner.invoke(app, ["eval", "generation", "--data", str(tmp_path), "--config", "tiny"])
    assert r.exit_code == 2 and "not a world" in r.output




def test_eval_replay_resumes_and_reports(gen_args, tiny_models, tmp_path):
    out = tmp_path / "replay"
    args = ["eval", "replay", *gen_args, "--requests", "6", "--tradeoff-scales", "0,3",
            "--set", "generation.num_inference_steps=5", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "replay.json").read_text())
    assert [row["method"] for row in res["rows"]] == ["ragar", "reference-only", "uniform"]
    assert {"hist_cos", "sem_cos", "ssim", "clpips", "hr@10", "ndcg@10", "ranker_fit"} <= set(res["metrics"])
    assert len(res["tradeoff"]) == 2 and (out / "replay.html").exists()
    # the report shows the images the replay chose, kept with the scores: the page generates nothing
    import polars as pl

    from eval.replay import chosen_images

    merged = pl.read_parquet(out / "merged.parquet")
    assert "image_rgb" not in res["metrics"]
    req = merged.filter(pl.col("method") == "ragar")["request_idx"][0]
    shown = chosen_images(merged, "ragar", [req])[0]
    assert shown.dtype == np.uint8 and shown.shape[2] == 3 and shown.std() > 0
    shards = sorted(p.name for p in (out / "shards").glob("*.parquet"))
    # resume: delete one shard, rerun; only it is recomputed and the results are identical
    (out / "shards" / shards[0]).unlink()
    before = {s: (out / "shards" / s).stat().st_mtime_ns for s in shards[1:]}
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == shards
    assert all((out / "shards" / s).stat().st_mtime_ns == t for s, t in before.items())
    res2 = json.loads((out / "replay.json").read_text())
    diff = [(a["method"], k, a[k], b[k]) for a, b in zip(res["rows"], res2["rows"], strict=True)
            for k in a if a[k] != b[k]]
    assert not diff, diff
    r = runner.invoke(app, [*args[:-2], "--n", "2", "--out", str(out)])
    assert r.exit_code == 2 and "other settings" in r.output
    # other generator weights (the same architecture, saved in float16) into the same --out: refused,
    # not merged with the old generator's shards
    from ragar.generation.pipeline import RagarPipeline

    other = tmp_path / "generator-fp16"
    RagarPipeline.from_pretrained(tiny_models["generator"], scheduler="ddpm").save_pretrained(other, half=True)
    swapped = [str(other) if a == str(tiny_models["generator"]) else a for a in args]
    r = runner.invoke(app, swapped)
    assert r.exit_code == 2 and "other settings" in r.output
    r = runner.invoke(app, ["eval", "replay", *gen_args, "--methods", "best", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown methods" in r.output


def test_eval_fpr_from_csv_folders(tiny_world, tmp_path):
    import polars as pl

    v = pl.read_parquet(tiny_world / "views.parquet")
    gal = v.select(pl.col("image").map_elements(lambda p: str(tiny_world / p), return_dtype=pl.Utf8),
                   pl.col("identity_id").alias("identity"), "category")
    q = gal.filter(~pl.col("identity").str.contains("~")).head(10)
    # the queries' identities whole (their other views, their near-identity distractors) and 40 renders
    # of others: every query has its positives and look-alikes, in a gallery small enough to embed fast
    base = pl.col("identity").str.split("~").list.first()
    gal = pl.concat([gal.filter(base.is_in(q["identity"].implode())), gal.filter(~base.is_in(q["identity"].implode()))
                     .head(40)])
    gal.write_csv(tmp_path / "gallery.csv")
    q.write_csv(tmp_path / "queries.csv")
    r = runner.invoke(app, ["eval", "fpr", "--gallery", str(tmp_path / "gallery.csv"), "--queries",
                            str(tmp_path / "queries.csv"), "--encoder", "efficientnet-lite0", "--k", "20",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "fpr.json").read_text())
    assert res["r@1"] == 1.0  # the query images are in the gallery: they find themselves first
    assert 0 < res["map@20"] <= 1 and set(res["per_category"]) <= set(q["category"].to_list())
    (tmp_path / "bad.csv").write_text("image,who\nx.png,a\n")
    r = runner.invoke(app, ["eval", "fpr", "--gallery", str(tmp_path / "bad.csv"), "--queries",
                            str(tmp_path / "queries.csv"), "--encoder", "efficientnet-lite0"])
    assert r.exit_code == 2 and "missing columns ['identity']" in r.output


def test_generate_with_a_relative_data_path(tiny_models, tmp_path, monkeypatch):
    data = tiny_models["data"]
    monkeypatch.chdir(data.parent)
    r = runner.invoke(app, ["generate", "--user", "u000001", "--reference", "mug-00000-s10", "--n", "1",
                            "--data", data.name, "--generator", str(tiny_models["generator"]), "--config", "tiny",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "index.html").read_text().count("<img") >= 2
