"""serving.simulate directly: who the simulated users are and what they ask for."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.world.oracle import World
from serving.simulate import returning_traffic, simulated_requests


@pytest.fixture(scope="module")
def world(tiny_world):
    return World(tiny_world)


def test_one_request_per_user_with_a_history(world):
    reqs = simulated_requests(world, 5, seed=0)
    assert reqs.height == 5 and reqs["user_id"].n_unique() == 5
    known = set(world.interactions().select("user_id").unique().collect()["user_id"])
    assert set(reqs["user_id"]) <= known
    # each reference is a catalog item of the category the request is about
    cat = dict(zip(world.items["item_id"], world.items["category"], strict=True))
    assert all(cat[i] == c for i, c in zip(reqs["reference_item_id"], reqs["category"], strict=True))
    assert simulated_requests(world, 5, seed=0).equals(reqs)  # a seed gives the same users


def test_returning_users_browse_what_they_like(world):
    t = returning_traffic(world, 6, days=4, seed=1, visit_p=0.5, max_requests_per_visit=2)
    assert t.height > 0 and set(t["day"]) <= set(range(4)) and t["user_id"].n_unique() <= 6
    assert t.group_by("day", "user_id").len()["len"].max() <= 2
    inter = world.interactions().join(world.items.lazy().select("item_id", "category"), on="item_id").collect()
    browsed = set(inter.filter(pl.col("event_type") == "impression").select("user_id", "item_id").iter_rows())
    assert all(r in browsed for r in t.select("user_id", "reference_item_id").iter_rows())
    liked = (inter.filter(pl.col("event_type").is_in(["click", "like"])).group_by("user_id", "category").len()
             .filter(pl.col("len") >= 2))
    liked = set(liked.select("user_id", "category").iter_rows())
    assert all(r in liked for r in t.select("user_id", "category").iter_rows())
    assert returning_traffic(world, 6, days=4, seed=1, visit_p=0.5, max_requests_per_visit=2).equals(t)
    # visiting more often sends more requests (same users, same seed)
    assert returning_traffic(world, 6, days=4, seed=1, visit_p=1.0, max_requests_per_visit=2).height > t.height
    assert returning_traffic(world, 6, days=4, seed=1, visit_p=0.0).height == 0
