"""The generation comparison's request sampler and metrics, on the tiny world's oracle."""

import json

import numpy as np
import polars as pl

from eval.generation import _true_parts, sample_requests
from recsys.world.oracle import World, user_index


def test_requests_need_history_in_the_category_and_a_non_ideal_reference(tiny_world):
    w = World(tiny_world)
    req = sample_requests(w, 20, seed=0)
    assert 0 < req.height <= 20 and req["user_id"].n_unique() > 1
    items = w.items.select("item_id", "category", "palette", "pattern", "finish")
    pos = w.interactions().filter(pl.col("event_type").is_in(["click", "like"])).collect().join(items, on="item_id")
    o = w.oracle
    for u, ref, cat in req.iter_rows():
        assert pos.filter((pl.col("user_id") == u) & (pl.col("category") == cat)).height >= 2
        it = items.filter(pl.col("item_id") == ref).row(0, named=True)
        assert it["category"] == cat
        ideal = o.ideal_style(user_index([u])[0], o.category_index([cat])[0])
        assert (it["palette"], it["pattern"], it["finish"]) != tuple(int(x) for x in ideal)
    again = sample_requests(w, 20, seed=0)
    assert again.equals(req)


def test_true_parts_from_item_attributes(tiny_world):
    w = World(tiny_world)
    first = w.items.row(0, named=True)
    parts = _true_parts(w, [first["item_id"]])
    assert parts.shape == (1, 2) and (parts >= 0).all()
    assert np.array_equal(parts[0], [int(v) for k, v in json.loads(first["attributes"]).items()
                                     if k not in ("width", "height", "palette", "pattern", "finish")])
