"""Mechanics of the ranking pipeline on the tiny world: features without leakage, LightGBM and the
torch ranker train, save/load round-trips, the scoring paths and their errors."""

import numpy as np
import polars as pl
import pytest
import torch

from eval.ranker import evaluate_rankers
from recsys.ranking.din import DINConfig, DINRanker
from recsys.ranking.features import ItemTable, build_features, feature_names, impressions_with_labels
from recsys.ranking.lgbm import LambdaRankRanker, group_sizes
from recsys.ranking.pipeline import Rankers, prepare, train_rankers
from recsys.world.oracle import World


@pytest.fixture(scope="module")
def items(tiny_world):
    w = World(tiny_world)
    rng = np.random.default_rng(0)
    n = w.items.height
    # deterministic pseudo-embeddings: category direction + style direction + noise (no encoder needed)
    cats = sorted(w.items["category"].unique().to_list())
    ci = np.asarray([cats.index(c) for c in w.items["category"]])
    img = np.zeros((n, 32), np.float32)
    img[np.arange(n), ci] = 1.0
    img[np.arange(n), 8 + w.items["palette"].to_numpy()] = 1.0
    img += 0.1 * rng.normal(size=img.shape).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    comb = np.concatenate([img, img[:, :16]], 1)
    comb /= np.linalg.norm(comb, axis=1, keepdims=True)
    return ItemTable(w.items["item_id"].to_numpy(), img, comb, ci, cats)


@pytest.fixture(scope="module")
def data(tiny_world, items):
    return prepare(World(tiny_world).interactions(), items, hr_queries=40, hr_negatives=19)


def test_impression_labels(tiny_world):
    imp = impressions_with_labels(World(tiny_world).interactions())
    inter = World(tiny_world).interactions().collect()
    assert imp.height == inter.filter(pl.col("event_type") == "impression").height
    assert imp["click"].sum() == inter.filter(pl.col("event_type") == "click").height
    assert (imp["grade"] == imp["click"].cast(int) + imp["like"].cast(int)).all()


def test_features_use_only_the_past(tiny_world, items):
    inter = World(tiny_world).interactions().collect()
    samples = impressions_with_labels(inter).tail(200)
    fb = build_features(samples, inter, items)
    # adding future events (after every sample) must not change any feature
    future = inter.with_columns(pl.col("timestamp") + pl.duration(days=3650),
                                (pl.col("request_id") + "-future").alias("request_id"))
    fb2 = build_features(samples, pl.concat([inter, future]), items)
    for col in fb.features.columns:  # equal up to float summation order (padding shapes differ)
        np.testing.assert_allclose(fb.features[col].to_numpy(), fb2.features[col].to_numpy(), atol=1e-6, err_msg=col)
    assert set(feature_names("ragar")) <= set(fb.features.columns)
    assert set(feature_names("uniform")) <= set(fb.features.columns)
    assert fb.features.select(pl.all().is_nan().any()).row(0) == (False,) * fb.features.width


def test_train_evaluate_save_load(data, items, tmp_path):
    rk = train_rankers(data, items, epochs=2)
    assert rk.din_losses["ragar"][-1] < rk.din_losses["ragar"][0]  # the torch ranker learns
    res = evaluate_rankers(rk, data, items)
    names = [r["model"] for r in res["rows"]]
    assert names == ["popularity", "cosine", "cosine-uniform", "lightgbm", "lightgbm-uniform", "din", "din-uniform"]
    for r in res["rows"]:
        assert 0 <= r["ndcg@10"] <= 1 and 0 <= r["hr@10"] <= 1
    assert 0 < res["calibration"]["mean_predicted"] < 1
    rk.save_pretrained(tmp_path / "rk")
    back = Rankers.from_pretrained(tmp_path / "rk")
    x = data.test.features.select(feature_names("ragar")).to_numpy().astype(np.float32)
    np.testing.assert_allclose(back.lgbm["ragar"].predict(x), rk.lgbm["ragar"].predict(x), rtol=1e-6)
    res2 = evaluate_rankers(back, data, items)
    assert res2["rows"] == res["rows"]
    # the preference settings the features were built with travel with the rankers
    assert data.preference is not None and back.preference == data.preference
    assert (tmp_path / "rk" / "din-ragar" / "model.safetensors").exists()
    assert (tmp_path / "rk" / "lgbm-ragar" / "model.txt").exists()


def test_din_forward_paths_agree_and_validate(items):
    torch.manual_seed(0)
    m = DINRanker(DINConfig(32, 48, 3)).eval()
    pos = torch.tensor([[0, 3, 5, -1], [7, -1, -1, -1]])
    mask = pos >= 0
    cand = torch.from_numpy(items.image[[1, 2]])
    st = torch.zeros(2, 3)
    it, ct = torch.from_numpy(items.image), torch.from_numpy(items.combined)
    a = m.forward_positions(cand, pos, mask, it, ct, st)
    b = m(cand, it[pos.clamp_min(0)], ct[pos.clamp_min(0)], mask, st)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="candidate embeddings must be"):
        m(torch.zeros(2, 5), it[pos.clamp_min(0)], ct[pos.clamp_min(0)], mask, st)
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((2, 32), float("nan")), it[pos.clamp_min(0)], ct[pos.clamp_min(0)], mask, st)
    # gradients reach the candidate image: what the generator's rank task needs
    c = cand.clone().requires_grad_(True)
    m(c, it[pos.clamp_min(0)], ct[pos.clamp_min(0)], mask, st).sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    p = m.click_probability(a)
    assert ((p > 0) & (p < 1)).all()


def test_lgbm_errors_and_groups():
    assert group_sizes(np.array(["a", "a", "b", "c", "c", "c"])).tolist() == [2, 1, 3]
    with pytest.raises(RuntimeError, match="not trained"):
        LambdaRankRanker(["x"]).predict(np.zeros((1, 1)))


def test_scorer_any_images_cold_start_and_errors(tiny_world, items):
    from recsys.ranking.scoring import PreferenceScorer

    torch.manual_seed(0)
    model = DINRanker(DINConfig(32, 48, 3)).eval()
    scorer = PreferenceScorer(model, items, World(tiny_world).interactions())
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(4, 32)).astype(np.float32)  # not catalog items: e.g. generated images
    res = scorer.score(["u000001", "nobody"], imgs)
    assert res.probabilities.shape == (2, 4)
    assert res.cold_start == [False, True] and res.history_len[0] > 0
    assert ((res.probabilities > 0) & (res.probabilities < 1)).all()
    # scoring a catalog item's embedding equals scoring the same vector passed explicitly per user
    per_user = scorer.score(["u000001"], imgs[None])
    np.testing.assert_allclose(per_user.probabilities[0], res.probabilities[0], rtol=1e-5)
    with pytest.raises(ValueError, match="must be"):
        scorer.score(["u000001"], np.zeros((4, 7), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        scorer.score(["u000001"], np.full((1, 32), np.nan, np.float32))


def test_training_is_deterministic_by_seed(data, items):
    a = evaluate_rankers(train_rankers(data, items, epochs=1, seed=3), data, items)
    b = evaluate_rankers(train_rankers(data, items, epochs=1, seed=3), data, items)
    assert a["rows"] == b["rows"]
