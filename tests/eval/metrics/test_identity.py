import numpy as np
import pytest
import torch

from eval.metrics.identity import (
    FinerPersonalizationRank,
    SampleSuccessRate,
    finer_personalization_rank,
    sample_success_rate,
)


def _vecs(*angles):
    """Unit vectors in 2-d at the given angles (degrees): cosine = cos(angle difference)."""
    t = torch.deg2rad(torch.tensor(angles, dtype=torch.float32))
    return torch.stack([t.cos(), t.sin()], -1)


def test_fpr_hand_computed():
    # query at 0 deg; gallery A@10, B@20, A@80, C@30 -> ranked A, B, C, A
    gallery = _vecs(10, 20, 80, 30)
    res = finer_personalization_rank(_vecs(0), ["A"], gallery, ["A", "B", "A", "C"])
    assert res["map"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert res["r@1"] == 1.0 and res["r@5"] == 1.0 and res["mean_rank"] == 1.0
    # identity drift: the query at 20 deg looks like B; gallery A@10, B@20, A@80, C@25 -> B, C, A, A
    res = finer_personalization_rank(_vecs(20), ["A"], _vecs(10, 20, 80, 25), ["A", "B", "A", "C"])
    assert res["r@1"] == 0.0 and res["r@5"] == 1.0 and res["mean_rank"] == 3.0
    assert res["map"] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_fpr_degenerate_cases():
    # identical images: the query is its own gallery item
    g = _vecs(0, 90)
    res = finer_personalization_rank(g, ["x", "y"], g, ["x", "y"])
    assert res == {"map": 1.0, "r@1": 1.0, "r@5": 1.0, "mean_rank": 1.0}
    # one-image gallery
    assert finer_personalization_rank(_vecs(5), ["x"], _vecs(0), ["x"])["map"] == 1.0
    # ties are broken against the model: a collapsed encoder gets the worst rank
    flat = torch.ones(3, 2)
    res = finer_personalization_rank(flat[:1], ["A"], flat, ["B", "A", "C"])
    assert res["mean_rank"] == 3.0 and res["r@1"] == 0.0
    # an identity absent from the gallery ranks past the end
    assert finer_personalization_rank(_vecs(0), ["Z"], g, ["x", "y"])["mean_rank"] == 3.0


def test_fpr_metric_accumulates_like_the_functional():
    torch.manual_seed(0)
    g, q = torch.randn(50, 8), torch.randn(20, 8)
    gl = [str(i % 7) for i in range(50)]
    ql = [str(i % 7) for i in range(20)]
    m = FinerPersonalizationRank(g, gl)
    m.update(q[:9], ql[:9])
    m.update(q[9:], ql[9:])
    whole = finer_personalization_rank(q, ql, g, gl)
    assert {k: float(v) for k, v in m.compute().items()} == pytest.approx(whole)
    m.reset()
    m.update(q[:1], ql[:1])
    assert float(m.n) == 1
    assert FinerPersonalizationRank.higher_is_better


def test_fpr_errors():
    with pytest.raises(ValueError, match="empty"):
        FinerPersonalizationRank(torch.zeros(0, 2), [])
    m = FinerPersonalizationRank(_vecs(0, 90), ["a", "b"])
    with pytest.raises(ValueError, match="dim"):
        m.update(torch.ones(1, 3), ["a"])
    with pytest.raises(ValueError, match="NaN"):
        m.update(torch.full((1, 2), float("nan")), ["a"])
    with pytest.raises(ValueError, match="labels"):
        m.update(torch.ones(2, 2), ["a"])


def test_ssr_hand_computed_and_margin():
    a = _vecs(0, 0)
    p = _vecs(10, 40)
    d = torch.stack([_vecs(30, 50), _vecs(20, 60)])  # anchor 0: best distractor 30 deg; anchor 1: 20 deg
    # anchor 0: positive at 10 beats 30 -> success; anchor 1: positive at 40 loses to 20 -> failure
    assert float(sample_success_rate(a, p, d)) == 0.5
    # margin: cos(10) - cos(30) = 0.119 -> fails a 0.2 margin
    assert float(sample_success_rate(a, p, d, margin=0.2)) == 0.0
    # a masked-out distractor does not count
    mask = torch.tensor([[True, True], [False, True]])
    d2 = torch.stack([_vecs(30, 50), _vecs(20, 60)])
    d2[1, 0] = _vecs(0)[0]  # would beat anything, but is masked
    assert float(sample_success_rate(a[1:], _vecs(50), d2[1:], distractor_mask=mask[1:])) == 1.0


def test_ssr_degenerate_and_accumulation():
    x = _vecs(0)
    # identical positive and distractor: a tie is not a success at margin 0
    assert float(sample_success_rate(x, x, x[None])) == 0.0
    m = SampleSuccessRate(0.0)
    m.update(_vecs(0), _vecs(5), _vecs(40)[None])
    m.update(_vecs(0), _vecs(50), _vecs(40)[None])
    assert float(m.compute()) == 0.5
    with pytest.raises(ValueError, match="expected"):
        m.update(_vecs(0), _vecs(5), _vecs(40))


def test_faiss_gallery_matches_brute_force_without_ties():
    from eval.metrics.identity import IdentityGallery, finer_personalization_rank

    g = torch.nn.functional.normalize(torch.randn(60, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    labels = [f"id{i % 12}" for i in range(60)]
    q = g[:20] + 0.3 * torch.randn(20, 16, generator=torch.Generator().manual_seed(2))
    ql = labels[:20]
    exact = finer_personalization_rank(q, ql, g, labels)
    gal = IdentityGallery(g.numpy(), labels, categories=None)
    got = gal.evaluate(q.numpy(), ql, k=60)
    assert got["map@60"] == pytest.approx(exact["map"], abs=1e-5)
    assert got["r@1"] == pytest.approx(exact["r@1"]) and got["r@5"] == pytest.approx(exact["r@5"])
    assert got["mean_rank@60"] == pytest.approx(exact["mean_rank"])


def test_faiss_gallery_top_k_cap_categories_and_degenerate_cases():
    from eval.metrics.identity import IdentityGallery

    g = torch.eye(4)
    gal = IdentityGallery(g.numpy(), ["a", "b", "c", "d"], categories=["x", "x", "y", "y"])
    # a query equal to gallery image "c" finds it first; one whose identity is absent ranks k + 1
    out = gal.evaluate(np.stack([g[2].numpy(), g[0].numpy()]), ["c", "zz"], query_categories=["y", "x"], k=2)
    assert out["r@1"] == 0.5 and out["mean_rank@2"] == pytest.approx((1 + 3) / 2) and out["map@2"] == 0.5
    assert out["per_category"]["y"]["r@1"] == 1.0 and out["per_category"]["x"]["r@1"] == 0.0
    one = IdentityGallery(np.ones((1, 3), np.float32), ["only"])
    assert one.evaluate(np.ones((1, 3), np.float32), ["only"])["map@1"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        IdentityGallery(np.zeros((0, 3), np.float32), [])
    with pytest.raises(ValueError, match="labels"):
        gal.evaluate(g.numpy(), ["a"])
