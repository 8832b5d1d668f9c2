"""eval.preference directly: the pairs, the oracle's ideal, and each method's numbers by hand.

One-hot item vectors make every quantity readable: a preference embedding's cosine to the ideal is
the weight it puts on the ideal items."""

from __future__ import annotations

import numpy as np
import pytest

from eval.preference import evaluate_preference, ideal_vectors, make_pairs
from recsys.preference import PreferenceConfig
from recsys.world.oracle import World


@pytest.fixture(scope="module")
def world(tiny_world):
    return World(tiny_world)


@pytest.fixture(scope="module")
def onehot(world):
    ids = world.items["item_id"].to_numpy()
    return ids, np.eye(len(ids), dtype=np.float32)


def test_pairs_hold_out_the_last_positives(world, onehot):
    ids, _ = onehot
    pairs = make_pairs(world, ids, max_pairs=60, seed=0)
    n = len(pairs.user_ids)
    assert 0 < n <= 60 and pairs.history.mask.shape[0] == n
    cat = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    for t, r, c in zip(pairs.target_ids, pairs.reference_pos, pairs.categories, strict=True):
        assert ids[r] != t and cat[ids[r]] == cat[t] == c  # the thing to render: another item of the category
    h = pairs.history
    assert (h.age_days[h.mask] > 0).all()  # strictly before the held-out event


def test_the_ideal_is_the_best_items_of_the_category(world, onehot):
    ids, vecs = onehot
    pairs = make_pairs(world, ids, max_pairs=20, seed=1)
    ideal = ideal_vectors(world, ids, vecs, pairs.user_ids, pairs.categories)
    assert np.allclose(np.linalg.norm(ideal, axis=1), 1, atol=1e-6)
    for i, (u, c) in enumerate(zip(pairs.user_ids, pairs.categories, strict=True)):
        in_cat = np.flatnonzero(world.items["category"].to_numpy() == c)
        util = world.item_utility([u] * len(in_cat), ids[in_cat])
        best = set(in_cat[util >= util.max() - 1e-6])
        assert set(np.flatnonzero(ideal[i] > 0)) == best


def test_each_method_is_measured_on_the_same_pairs(world, onehot):
    ids, vecs = onehot
    res = evaluate_preference(world, ids, vecs, ["ragar", "uniform", "reference-only"], PreferenceConfig(),
                              k=5, max_pairs=40, seed=2)
    pairs, per = res["pairs"], res["per_pair"]
    ideal = ideal_vectors(world, ids, vecs, pairs.user_ids, pairs.categories)
    # reference only: the cosine is the ideal's weight on the reference item
    assert np.allclose(per["reference-only"]["ideal_cos"], ideal[np.arange(len(ideal)), pairs.reference_pos],
                       atol=1e-6)
    # uniform: the normalised mean of the history's one-hots
    h = pairs.history
    for i in range(len(ideal)):
        if not h.mask[i].any():
            continue
        mean = vecs[h.positions[i][h.mask[i]]].mean(0)
        assert per["uniform"]["ideal_cos"][i] == pytest.approx(float(mean @ ideal[i] / np.linalg.norm(mean)), abs=1e-5)
    for row in res["rows"]:
        assert row["pairs"] == len(ideal) and row["ideal_cos_lo"] <= row["ideal_cos"] <= row["ideal_cos_hi"]
        assert row["hr@5_lo"] <= row["hr@5"] <= row["hr@5_hi"]
        assert row["ideal_cos"] == pytest.approx(per[row["method"]]["ideal_cos"].mean())
