"""Bounded load runs in the default suite (the 60-second comparison is `make bench`)."""

from serving.loadtest import run_load
from tests.serving.conftest import TOKENS


def test_32_clients_see_only_deliberate_429s_and_503s(live):
    with live(queue_size=8, max_batch_size=8, max_wait_ms=20) as (url, svc):
        users = svc.users["user_id"].head(20).to_list()
        items = svc.items["item_id"].head(10).to_list()
        res = run_load(url, users, items, clients=32, duration_s=6, n=1, api_key=TOKENS["admin"])
        print(res.to_dict())
        assert res.errors == {}, res.errors
        assert res.ok > 0 and res.rejected_429 + res.rejected_503 > 0  # 32 clients on a queue of 8: push-back
        assert res.mean_batch_size > 1.5  # concurrent requests were batched
        assert res.p50_s <= res.p95_s <= res.p99_s
        stored = svc.store.exposures_frame().height
        assert stored == res.ok and svc.store.feedback_frame().height == res.ok
        # nobody waits after the run: the generator stopped within one batch of the last answer
        assert res.generator_tail_s is not None and res.generator_tail_s <= res.max_batch_s


def test_clients_that_leave_leave_no_work_behind(live):
    """The issue's burst: clients give up (time out) long before the queue drains. Their requests
    are dropped unrun, and generation stops within one batch of the last client leaving."""
    with live(queue_size=64, max_batch_size=2, max_wait_ms=0, num_inference_steps=8) as (url, svc):
        users = svc.users["user_id"].head(20).to_list()
        items = svc.items["item_id"].head(10).to_list()
        run_load(url, users[:2], items[:2], clients=1, duration_s=1, n=4, api_key=TOKENS["admin"])  # warm-up
        res = run_load(url, users, items, clients=20, duration_s=2, n=4, api_key=TOKENS["admin"],
                       client_timeout_s=1.0, feedback=False, max_requests_per_client=1)
        print(res.to_dict())
        assert set(res.errors) <= {"ReadTimeout"} and res.requests == 20
        assert res.generator_tail_s is not None and res.generator_tail_s <= res.max_batch_s + 0.5
        assert svc.batcher.cancelled > 0  # the abandoned requests were dropped from the queue
