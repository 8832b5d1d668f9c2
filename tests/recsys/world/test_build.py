import json

import numpy as np
import polars as pl

from recsys.world.build import build_world, style_of
from recsys.world.oracle import World, user_index
from recsys.world.render import CATEGORIES


def test_counts_and_structure(tiny_world, tiny_config):
    cfg = tiny_config.world
    w = World(tiny_world)
    assert w.items.height == cfg.n_items
    assert w.items["category"].n_unique() >= 8
    assert len(CATEGORIES) >= 8
    views = w.views
    per_item = views.filter(pl.col("kind") == "view").group_by("item_id").len()
    assert per_item["len"].min() >= 4
    # every identity appears in several styles
    assert w.items.group_by("identity_id").len()["len"].min() == cfg.styles_per_identity
    assert all(len(t) > 10 for t in w.items["title"])
    for rel in views["image"].head(20):
        assert (tiny_world / rel).exists()


def test_distractors_change_exactly_one_part_and_share_the_view(tiny_world):
    w = World(tiny_world)
    views = w.views
    d = views.filter(pl.col("kind") == "distractor")
    assert d.height > 0
    src = views.filter(pl.col("kind") == "view").select(
        "view_id", pl.col("identity_id").alias("src_identity"), pl.col("angle").alias("a"),
        pl.col("background").alias("bg"), pl.col("scale").alias("s"))
    j = d.join(src, left_on="source_view_id", right_on="view_id")
    assert j.height == d.height
    assert (j["angle"] == j["a"]).all() and (j["background"] == j["bg"]).all() and (j["scale"] == j["s"]).all()
    for row in j.iter_rows(named=True):
        base, change = row["identity_id"].split("~")
        assert base == row["src_identity"]
        part, _ = change.split("=")
        assert part == row["changed_part"]


def test_deterministic_by_seed(tmp_path, tiny_config):
    a = build_world(tiny_config.world, tmp_path / "a", progress=False)
    b = build_world(tiny_config.world, tmp_path / "b", progress=False)
    assert a["counts"] == b["counts"]
    for f in ("items.parquet", "interactions.parquet", "views.parquet"):
        assert pl.read_parquet(tmp_path / "a" / f).equals(pl.read_parquet(tmp_path / "b" / f))
    img = pl.read_parquet(tmp_path / "a" / "items.parquet")["image"][5]
    assert (tmp_path / "a" / img).read_bytes() == (tmp_path / "b" / img).read_bytes()
    c = build_world(tiny_config.world.model_copy(update={"seed": 1}), tmp_path / "c", progress=False)
    assert not pl.read_parquet(tmp_path / "c" / "interactions.parquet").equals(
        pl.read_parquet(tmp_path / "a" / "interactions.parquet"))
    assert c["counts"]["items"] == a["counts"]["items"]


def test_image_size_is_configurable(tmp_path, tiny_config):
    from PIL import Image

    cfg = tiny_config.world.model_copy(update={"image_size": 128, "identities_per_category": 1,
                                                "styles_per_identity": 1, "n_users": 3, "slate_size": 5})
    build_world(cfg, tmp_path, progress=False)
    img = pl.read_parquet(tmp_path / "items.parquet")["image"][0]
    assert Image.open(tmp_path / img).size == (128, 128)


def test_clicks_follow_utility_and_position_bias(tmp_path, tiny_config):
    cfg = tiny_config.world.model_copy(update={"n_users": 200, "requests_per_user": 20})
    build_world(cfg, tmp_path, progress=False)
    w = World(tmp_path)
    inter = w.interactions().collect()
    imp = inter.filter(pl.col("event_type") == "impression")
    clk = inter.filter(pl.col("event_type") == "click").select("request_id", "item_id", pl.lit(1).alias("c"))
    lab = imp.join(clk, on=["request_id", "item_id"], how="left").with_columns(pl.col("c").fill_null(0))
    util = w.item_utility(lab["user_id"].to_numpy(), lab["item_id"].to_numpy())
    c = lab["c"].to_numpy()
    assert util[c == 1].mean() > util[c == 0].mean() + 0.8
    ctr = lab.group_by("position").agg(pl.col("c").mean()).sort("position")["c"].to_numpy()
    assert ctr[0] > 2 * ctr[-1]  # position bias: the top slot is clicked far more often
    likes = inter.filter(pl.col("event_type") == "like")
    assert 0 < likes.height < clk.height


def test_preferences_are_category_conditional(tiny_world):
    o = World(tiny_world).oracle
    fav = o.palette.argmax(-1)  # (U, C)
    differs = (fav != fav[:, :1]).any(axis=1).mean()
    assert differs > 0.9  # almost every user likes different colours in different categories
    pal, pat, fin = o.ideal_style(0, 3)
    assert o.utility(0, 3, pal, pat, fin) >= o.utility(0, 3, (pal + 1) % 6, pat, fin)


def test_oracle_ideal_items_and_unknown_ids(tiny_world):
    w = World(tiny_world)
    best = w.ideal_items(["u000001", "u000001"], ["mug", "lamp"])
    items = w.items.filter(pl.col("category") == "mug")
    utils = w.item_utility(["u000001"] * items.height, items["item_id"].to_numpy())
    assert best[0] == items["item_id"][int(np.argmax(utils))]
    import pytest

    with pytest.raises(KeyError, match="unknown items"):
        w.item_utility(["u000001"], ["nope"])
    with pytest.raises(KeyError, match="unknown user"):
        user_index(["alice"])


def test_style_codes_roundtrip():
    from recsys.world.build import N_STYLES, style_code

    seen = {style_of(c) for c in range(N_STYLES)}
    assert len(seen) == N_STYLES
    assert all(style_code(s.palette, s.pattern, s.finish) == c for c, s in
               ((c, style_of(c)) for c in range(N_STYLES)))


def test_manifest(tiny_world):
    m = json.loads((tiny_world / "world.json").read_text())
    assert m["counts"]["interactions"] == World(tiny_world).interactions().collect().height
    assert set(m["vocab"]) >= {"categories", "palettes", "patterns", "finishes"}


def test_slate_larger_than_catalog_is_a_config_error():
    import pytest
    from pydantic import ValidationError

    from recsys.world.config import WorldConfig

    with pytest.raises(ValidationError, match="exceeds the catalog"):
        WorldConfig(identities_per_category=1, styles_per_identity=1, slate_size=10)


def test_slates_never_repeat_an_item(tiny_world):
    imp = World(tiny_world).interactions().filter(pl.col("event_type") == "impression").collect()
    per_req = imp.group_by("request_id").agg(pl.len(), pl.col("item_id").n_unique().alias("u"))
    assert (per_req["len"] == per_req["u"]).all()
