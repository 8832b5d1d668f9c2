from datetime import datetime, timedelta

import polars as pl

from recsys.history import build_histories, requests_at

T0 = datetime(2026, 1, 1)


def _log():
    rows = [("u", "a", 1, "click"), ("u", "a", 2, "like"), ("u", "b", 3, "click"), ("u", "c", 4, "impression"),
            ("u", "d", 10, "click"), ("v", "a", 5, "click")]
    return pl.DataFrame([{"user_id": u, "item_id": i, "timestamp": T0 + timedelta(days=d), "event_type": e,
                          "request_id": f"r{k}", "position": 0} for k, (u, i, d, e) in enumerate(rows)])


def test_strictly_before_dedup_and_strongest_event():
    pos = {"a": 0, "b": 1, "c": 2, "d": 3}
    h = build_histories(_log(), requests_at(["u", "v", "w"], [T0 + timedelta(days=6)] * 3), pos)
    assert h.item_ids[0] == ["a", "b"]  # impression c is not positive; d is in the future
    assert h.event_types[0] == ["like", "click"]  # a was clicked then liked: the like wins
    assert h.positions[0, :2].tolist() == [0, 1] and not h.mask[0, 2:].any()
    assert abs(h.age_days[0, 0] - 4.0) < 1e-6 and abs(h.age_days[0, 1] - 3.0) < 1e-6
    assert h.item_ids[1] == ["a"]
    assert h.item_ids[2] == [] and not h.mask[2].any()  # unknown user: empty history, no error


def test_max_len_keeps_the_newest():
    pos = {"a": 0, "b": 1, "c": 2, "d": 3}
    h = build_histories(_log(), requests_at(["u"], T0 + timedelta(days=30)), pos, max_len=2)
    assert h.item_ids[0] == ["b", "d"]


def _same(a, b):
    import numpy as np

    assert a.item_ids == b.item_ids and a.event_types == b.event_types and a.user_ids == b.user_ids
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.age_days, b.age_days)


def test_one_long_history_serves_every_shorter_reader():
    """tail(k) of a history built once is exactly the history built with max_len=k, so the
    personalizer builds one and hands the ranker its share."""
    pos = {"a": 0, "b": 1, "c": 2, "d": 3}
    reqs = requests_at(["u", "v", "w"], T0 + timedelta(days=30))
    full = build_histories(_log(), reqs, pos)
    for k in (1, 2, 3, 200):
        _same(full.tail(k), build_histories(_log(), reqs, pos, max_len=k))


def test_remap_reads_the_history_in_another_table():
    pos = {"a": 0, "b": 1, "c": 2, "d": 3}
    other = {"d": 0, "b": 1, "a": 5}  # another order, and "c" missing (dropped, as a build drops it)
    reqs = requests_at(["u", "v"], T0 + timedelta(days=30))
    full = build_histories(_log(), reqs, pos)
    assert full.remap(pos) is full
    _same(full.remap(other), build_histories(_log(), reqs, other))
    assert full.embeddings(__import__("numpy").arange(4.0)[:, None])[0, :, 0].tolist() == [0.0, 1.0, 3.0]


def test_ages_keep_sub_second_precision():
    """An event half a second before the request is half a second old, not 0 (whole seconds
    truncated it once, so the newest event looked as old as the request)."""
    log = _log().with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    h = build_histories(log, requests_at(["v"], T0 + timedelta(days=5, milliseconds=500)), {"a": 0})
    assert abs(h.age_days[0, 0] * 86400 - 0.5) < 1e-3
