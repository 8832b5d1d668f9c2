"""A short bounded load run in the default suite (the 60-second comparison is `make bench`)."""

from serving.loadtest import run_load


def test_32_clients_see_only_deliberate_429s(live):
    with live(queue_size=8, max_batch_size=8, max_wait_ms=20) as (url, svc):
        users = svc.users["user_id"].head(20).to_list()
        items = svc.items["item_id"].head(10).to_list()
        res = run_load(url, users, items, clients=32, duration_s=6, n=1)
        print(res.to_dict())
        assert res.errors == {}, res.errors
        assert res.ok > 0 and res.rejected_429 > 0  # a queue of 8 under 32 clients must push back
        assert res.mean_batch_size > 1.5  # concurrent requests were batched
        assert res.p50_s <= res.p95_s <= res.p99_s
        stored = svc.store.exposures_frame().height
        assert stored == res.ok and svc.store.feedback_frame().height == res.ok
