import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from recsys.data.adapters import from_generic, from_movielens, from_pigeon
from recsys.data.splits import leave_last_out
from recsys.data.validate import validate_dataset


def _img(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).save(path)


def test_generic(tmp_path):
    for i in range(4):
        _img(tmp_path / "imgs" / f"it{i}.png")
    (tmp_path / "inter.csv").write_text(
        "user_id,item_id,timestamp\n1,it0,1700000000\n1,it1,1700000100\n2,it2,2024-01-02T10:00:00\n")
    out = from_generic(tmp_path / "inter.csv", tmp_path / "imgs", tmp_path / "ds")
    assert validate_dataset(out) == []
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter.height == 3 and set(inter["event_type"]) == {"click"}
    assert pl.read_parquet(out / "items.parquet").height == 4


def test_generic_missing_columns(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    (tmp_path / "inter.csv").write_text("user,item\n1,a\n")
    with pytest.raises(ValueError, match="missing columns"):
        from_generic(tmp_path / "inter.csv", tmp_path / "imgs", tmp_path / "ds")


def test_movielens(tmp_path):
    root = tmp_path / "ml"
    root.mkdir()
    (root / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n'
                                     '2,Heat (1995),Action|Crime\n3,No Poster (1999),Drama\n')
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,5.0,964982703\n"
                                      "1,2,3.0,964982800\n2,2,4.5,964983000\n2,3,4.0,964983100\n")
    _img(root / "posters" / "1.jpg")
    _img(root / "posters" / "2.png")
    out = from_movielens(root, tmp_path / "ds")
    assert validate_dataset(out) == []
    items = pl.read_parquet(out / "items.parquet")
    assert sorted(items["item_id"]) == ["1", "2"]  # movie 3 has no poster
    assert dict(zip(items["item_id"], items["category"], strict=True)) == {"1": "Animation", "2": "Action"}
    inter = pl.read_parquet(out / "interactions.parquet").sort("timestamp")
    assert inter["event_type"].to_list() == ["like", "rating", "like"]
    assert inter["rating"].to_list() == [5.0, 3.0, 4.5]


def test_pigeon(tmp_path):
    for cat in ("cats", "dogs"):
        for i in range(6):
            _img(tmp_path / cat / f"{i}.png")
    samples = [{"user_id": "u1", "history": [f"cats/{i}.png" for i in range(5)], "target": "dogs/0.png"},
               {"user_id": "u2", "history": [f"dogs/{i}.png" for i in range(1, 6)], "target": "cats/5.png"}]
    (tmp_path / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples))
    out = from_pigeon(tmp_path / "samples.jsonl", tmp_path / "ds")
    assert validate_dataset(out) == []
    inter = pl.read_parquet(out / "interactions.parquet")
    assert inter.height == 12
    _, test = leave_last_out(inter)
    assert sorted(test["item_id"]) == ["cats/5", "dogs/0"]
    (tmp_path / "bad.json").write_text(json.dumps([{"user_id": "u", "history": []}]))
    with pytest.raises(ValueError, match="lacks 'target'"):
        from_pigeon(tmp_path / "bad.json", tmp_path / "ds2")
