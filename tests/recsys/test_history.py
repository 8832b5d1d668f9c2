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
