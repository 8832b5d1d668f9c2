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


def test_perfect_answer_renders_the_reference_in_the_ideal_style(tiny_world):
    """Same identity and view as the reference (the background is the reference's), the user's ideal
    style (not the reference's, which the sampler excludes), at the world's size."""
    from eval.generation import perfect_answers
    from recsys.data.images import load_rgb
    from recsys.world.build import world_scenes
    from recsys.world.render import Style, render

    w = World(tiny_world)
    req = sample_requests(w, 6, seed=1)
    img = perfect_answers(w, req)
    size = json.loads((tiny_world / "world.json").read_text())["config"]["image_size"]
    assert img.shape == (req.height, size, size, 3) and img.dtype == np.uint8
    first = dict(zip(w.items["item_id"], w.items["image"], strict=True))
    scenes = world_scenes(tiny_world)
    o = w.oracle
    for k, (u, ref, cat) in enumerate(req.iter_rows()):
        reference = load_rgb(tiny_world / first[ref])
        assert np.array_equal(reference[0], img[k][0])  # the top row is background: the reference's view
        assert not np.array_equal(reference, img[k])    # another style
        ident, _, view = scenes[first[ref]]
        ideal = o.ideal_style(user_index([u])[0], o.category_index([cat])[0])
        assert np.array_equal(img[k], render(ident, Style(*(int(x) for x in ideal)), view, size))
        assert np.array_equal(reference, render(*scenes[first[ref]], size))  # the scenes are the world's
