from datetime import datetime, timedelta

import polars as pl
import pytest

from recsys.data.splits import global_time_split, leave_last_out


def _log(rows):
    t0 = datetime(2026, 1, 1)
    return pl.DataFrame(
        [{"user_id": u, "item_id": i, "timestamp": t0 + timedelta(hours=h), "event_type": e,
          "request_id": r, "position": 0} for u, i, h, e, r in rows])


LOG = _log([
    ("a", "x", 1, "impression", "r1"), ("a", "x", 1.5, "click", "r1"),
    ("a", "y", 5, "impression", "r2"), ("a", "y", 5.2, "click", "r2"), ("a", "y", 5.3, "like", "r2"),
    ("b", "x", 2, "impression", "r3"), ("b", "z", 9, "impression", "r4"), ("b", "z", 9.1, "click", "r4"),
    ("c", "z", 3, "impression", "r5"), ("c", "z", 3.1, "click", "r5"),
])


def test_global_cut_keeps_requests_whole():
    cut = datetime(2026, 1, 1, 5, 1)  # inside request r2 (which started at 5:00)
    train, test = global_time_split(LOG, cut)
    assert set(train["request_id"]) == {"r1", "r2", "r3", "r5"}
    assert set(test["request_id"]) == {"r4"}
    assert train.height + test.height == LOG.height


def test_global_quantile_cut_and_lazy():
    train, test = global_time_split(LOG.lazy(), 0.5)
    train, test = train.collect(), test.collect()
    assert train["timestamp"].max() < test["timestamp"].min() or train.height + test.height == LOG.height
    assert train.height and test.height
    with pytest.raises(ValueError):
        global_time_split(LOG, 1.5)


def test_leave_last_out():
    train, test = leave_last_out(LOG, n=1)
    # a: last positive is the like at 5.3; b and c have one positive each -> they stay in train
    assert sorted(zip(test["user_id"], test["event_type"], strict=True)) == [("a", "like")]
    for u in ("b", "c"):
        assert u in set(train["user_id"]) and u not in set(test["user_id"])
    assert train.filter(pl.col("user_id") == "b").height == 3
    # nothing in train is at or after a user's first held-out event
    j = train.join(test.group_by("user_id").agg(pl.col("timestamp").min().alias("t")), on="user_id")
    assert (j["timestamp"] < j["t"]).all()
    _train2, test2 = leave_last_out(LOG, n=2)
    assert sorted(test2.filter(pl.col("user_id") == "a")["event_type"]) == ["click", "like"]
    assert "b" not in set(test2["user_id"])  # b has only one positive


def test_leave_last_out_on_world(tiny_world):
    from recsys.world.oracle import World

    inter = World(tiny_world).interactions()
    _train, test = leave_last_out(inter)
    test = test.collect()
    assert test.group_by("user_id").len()["len"].max() == 1
    assert set(test["event_type"]) <= {"click", "like"}
