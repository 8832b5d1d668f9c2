import numpy as np
import pytest

from eval.metrics.ranking import auc, gauc, hit_rate_at_k, ndcg_at_k


def test_ndcg_hand_computed():
    # one group: relevance [2, 0, 1] scored so the order is item0, item1, item2
    s, y, g = np.array([3.0, 2.0, 1.0]), np.array([2, 0, 1]), np.zeros(3)
    dcg = (2**2 - 1) / np.log2(2) + 0 + (2**1 - 1) / np.log2(4)
    idcg = (2**2 - 1) / np.log2(2) + (2**1 - 1) / np.log2(3)
    assert ndcg_at_k(s, y, g, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(np.array([1.0, 3.0, 2.0]), np.array([2, 0, 1]), g, 1) == pytest.approx(0.0)


def test_ndcg_degenerate_cases():
    g = np.array([0, 0, 1, 1])
    assert np.isnan(ndcg_at_k(np.ones(4), np.zeros(4), g))  # no positives anywhere
    # ties are broken against the model: a constant scorer gets the worst order
    assert ndcg_at_k(np.ones(2), np.array([0, 1]), np.zeros(2), 1) == 0.0
    assert ndcg_at_k(np.array([1.0]), np.array([1]), np.zeros(1), 10) == 1.0  # one-item group
    # string group keys work
    assert ndcg_at_k(np.array([2.0, 1.0]), np.array([1, 0]), np.array(["a", "a"])) == 1.0


def test_hit_rate():
    s = np.array([0.9, 0.8, 0.1, 0.5, 0.4, 0.3])
    y = np.array([0, 0, 1, 1, 0, 0])
    g = np.array([0, 0, 0, 1, 1, 1])
    assert hit_rate_at_k(s, y, g, 2) == 0.5   # group 0: positive ranked 3rd; group 1: 1st
    assert hit_rate_at_k(s, y, g, 3) == 1.0
    assert hit_rate_at_k(np.ones(3), np.array([0, 1, 0]), np.zeros(3), 2) == 0.0  # ties count against


def test_auc_and_gauc():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(auc(np.ones(3), np.ones(3)))
    s = np.array([0.9, 0.1, 0.2, 0.8, 0.5])
    y = np.array([1, 0, 1, 0, 1])
    g = np.array([0, 0, 1, 1, 2])  # group 2 has one class only: skipped
    assert gauc(s, y, g) == pytest.approx((1.0 * 2 + 0.0 * 2) / 4)


def test_gauc_is_the_weighted_mean_of_sklearn_aucs_per_group():
    """The one-sort GAUC against the per-group definition, ties and one-class groups included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    g = rng.integers(0, 300, 5000)
    s = rng.integers(0, 6, 5000) / 5.0  # many ties
    y = rng.random(5000) < 0.2
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if y[m].any() and not y[m].all():
            num += roc_auc_score(y[m], s[m]) * m.sum()
            den += m.sum()
    assert gauc(s, y, g) == pytest.approx(num / den, abs=1e-12)
    assert np.isnan(gauc(s, np.zeros(5000), g))
    with pytest.raises(ValueError, match="NaN"):
        gauc(np.full(3, np.nan), [1, 0, 1], [0, 0, 0])
