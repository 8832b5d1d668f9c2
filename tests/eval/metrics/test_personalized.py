"""Personalized retrieval NDCG and classification PR-AUC against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from eval.metrics.personalized import (
    PersonalizedRepresentation,
    personalized_pr_auc,
    personalized_retrieval_ndcg,
)


def _unit(deg):
    r = np.deg2rad(np.asarray(deg, float))
    return np.stack([np.cos(r), np.sin(r)], 1)


def test_hand_computed_ndcg_and_pr_auc():
    anchors = _unit([0])
    # cosines to the anchor: 0.98 (relevant), 0.77 (not), 0.34 (relevant), -0.5 (not)
    gallery = _unit([10, 40, 70, 120])
    rel = [True, False, True, False]
    # ranking: rel, non, rel, non -> DCG = 1 + 1/log2(4); IDCG = 1 + 1/log2(3)
    assert personalized_retrieval_ndcg(anchors, gallery, rel) == pytest.approx(
        (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)), rel=1e-5)
    # AP: precision at the two relevant ranks = 1/1, 2/3 -> 5/6
    assert personalized_pr_auc(anchors, gallery, rel) == pytest.approx(5 / 6, rel=1e-5)


def test_pr_auc_uses_the_nearest_anchor_and_ndcg_averages_anchors():
    anchors = _unit([0, 90])
    gallery = _unit([85, 30, 5])
    rel = [True, False, True]
    # nearest-anchor scores: 85 -> cos 5, 30 -> cos 30, 5 -> cos 5: both relevant on top -> AP 1
    assert personalized_pr_auc(anchors, gallery, rel) == pytest.approx(1.0)
    per_anchor = [personalized_retrieval_ndcg(a[None], gallery, rel) for a in anchors]
    assert personalized_retrieval_ndcg(anchors, gallery, rel) == pytest.approx(np.mean(per_anchor))
    assert min(per_anchor) < 1.0  # the 0-degree anchor ranks the 30-degree negative second


def test_degenerate_cases():
    g = _unit([0, 50, 100])
    assert personalized_retrieval_ndcg(_unit([0]), g, [True, True, True]) == pytest.approx(1.0)
    assert personalized_pr_auc(_unit([0]), g, [True, True, True]) == pytest.approx(1.0)
    # identical images: the gallery is the anchor itself, every score ties at 1
    same = np.repeat(_unit([0]), 3, 0)
    assert 0.0 <= personalized_pr_auc(_unit([0]), same, [True, False, False]) <= 1.0
    with pytest.raises(ValueError, match="no image of the object"):
        personalized_pr_auc(_unit([0]), g, [False, False, False])
    with pytest.raises(ValueError, match="one flag per gallery image"):
        personalized_retrieval_ndcg(_unit([0]), g, [True])
    with pytest.raises(ValueError, match="NaN"):
        personalized_pr_auc(np.array([[np.nan, 1.0]]), g, [True, False, False])


def test_module_means_over_objects():
    m = PersonalizedRepresentation()
    assert m.higher_is_better
    with pytest.raises(ValueError, match="update"):
        m.compute()
    m.update(_unit([0]), _unit([10, 40, 70, 120]), [True, False, True, False])
    m.update(_unit([0]), _unit([0, 50, 100]), [True, True, True])
    out = m.compute()
    assert float(out["pr_auc"]) == pytest.approx((5 / 6 + 1) / 2, rel=1e-5)
    m.reset()
    with pytest.raises(ValueError):
        m.compute()
