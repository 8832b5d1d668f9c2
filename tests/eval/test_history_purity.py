"""eval.history_purity: the weight on the user's ideal palette, read against the world's truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from eval.history_purity import history_purity
from recsys.history import HistoryBatch
from recsys.preference import PreferenceConfig
from recsys.world.oracle import World, user_index


def _one_request(world: World):
    """User 0, in a category where the catalog has items in the user's ideal palette and in another:
    two liked items in the ideal palette, three clicked in one other palette, all equally similar."""
    o = world.oracle
    items = world.items
    for cat in items["category"].unique().sort().to_list():
        ideal = int(o.ideal_style(user_index(["u000000"]), o.category_index([cat]))[0][0])
        c = items.filter(pl.col("category") == cat)
        good = c.filter(pl.col("palette") == ideal)["item_id"].to_list()
        other = c.filter(pl.col("palette") != ideal)
        if good and other.height:
            bad = other.filter(pl.col("palette") == other["palette"][0])["item_id"].to_list()
            ids = [good[0], good[0], bad[0], bad[0], bad[0]]  # an item may repeat: only its attributes count
            hist = HistoryBatch(["u000000"], [ids], np.arange(5)[None], np.ones((1, 5), bool),
                                [["like", "like", "click", "click", "click"]], np.zeros((1, 5), np.float32))
            return pl.DataFrame({"user_id": ["u000000"], "category": [cat]}), hist
    pytest.skip("the tiny world has no category with both palettes")


def test_like_weight_moves_the_mass_to_the_ideal_palette(tiny_world):
    world = World(tiny_world)
    req, hist = _one_request(world)
    vectors = np.ones((5, 8), np.float32)  # every history item equally similar to the reference
    ref = np.ones((1, 8), np.float32)
    flat = history_purity(world, req, hist, vectors, ref,
                          PreferenceConfig(event_weights={"click": 1.0, "like": 1.0}))
    assert flat["mass_on_ideal_palette"] == pytest.approx(2 / 5)
    assert flat["heaviest_palette_is_ideal"] == 0.0  # three clicks outweigh two likes
    assert flat["mass_on_reference_category"] == pytest.approx(1.0)
    cfg = PreferenceConfig(event_weights={"click": 1.0, "like": 10.0})
    strong = history_purity(world, req, hist, vectors, ref, cfg)
    assert strong["mass_on_ideal_palette"] == pytest.approx(20 / 23, rel=1e-5)
    assert strong["heaviest_palette_is_ideal"] == 1.0
    assert strong["weighted_utility"] > flat["weighted_utility"]  # the ideal palette is worth +2 in the world
