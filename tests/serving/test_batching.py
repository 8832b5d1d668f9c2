"""The micro-batcher with a real function as its batch runner (records what it was given)."""

import asyncio
import threading
import time

import pytest

from serving.batching import DeadlineExceeded, MicroBatcher, Overloaded, QueueFull


def _runner(log, delay=0.0):
    def run(key, payloads):
        log.append((key, list(payloads)))
        time.sleep(delay)
        return [f"{key}:{p}" for p in payloads]
    return run


def test_groups_concurrent_requests_by_key_up_to_the_cap():
    log = []

    async def main():
        b = MicroBatcher(_runner(log), max_batch_size=3, max_wait_s=0.05, queue_size=100)
        await b.start()
        futs = [b.submit("x" if i % 2 == 0 else "y", i) for i in range(8)]
        res = await asyncio.gather(*futs)
        await b.stop()
        return res

    res = asyncio.run(main())
    assert [r for r, _ in res] == [f"{'x' if i % 2 == 0 else 'y'}:{i}" for i in range(8)]
    assert sorted(len(p) for _, p in log) == [1, 1, 3, 3]  # x: 0,2,4 | 6 ; y: 1,3,5 | 7
    for key, payloads in log:
        assert all((p % 2 == 0) == (key == "x") for p in payloads)
    sizes = {r: info.size for r, info in res}
    assert sizes["x:0"] == 3 and sizes["x:6"] == 1


def test_queue_bound_raises_queue_full_and_cancelled_requests_never_run():
    log = []
    gate = threading.Event()

    def run(key, payloads):
        gate.wait(5)
        return _runner(log)(key, payloads)

    async def main():
        b = MicroBatcher(run, max_batch_size=1, max_wait_s=0.0, queue_size=2)
        await b.start()
        first = b.submit("k", 0)
        await asyncio.sleep(0.05)  # the worker took it: the queue is empty again
        second, third = b.submit("k", 1), b.submit("k", 2)
        with pytest.raises(QueueFull):
            b.submit("k", 3)
        second.cancel()  # abandoned before its batch started
        gate.set()
        assert (await first)[0] == "k:0"
        assert (await third)[0] == "k:2"
        await b.stop()
        return b.cancelled

    cancelled = asyncio.run(main())
    assert [p for _, ps in log for p in ps] == [0, 2]
    assert cancelled == 1


def test_a_failing_batch_fails_its_requests_only():
    def run(key, payloads):
        if key == "bad":
            raise RuntimeError("boom")
        return payloads

    async def main():
        b = MicroBatcher(run, max_batch_size=4, max_wait_s=0.01)
        await b.start()
        bad, good = b.submit("bad", 1), b.submit("good", 2)
        with pytest.raises(RuntimeError, match="boom"):
            await bad
        assert (await good)[0] == 2
        await b.stop()

    asyncio.run(main())


def test_requests_past_their_deadline_never_run():
    log, gate = [], threading.Event()

    def run(key, payloads):
        gate.wait(5)
        return _runner(log)(key, payloads)

    async def main():
        b = MicroBatcher(run, max_batch_size=4, max_wait_s=0.0)
        await b.start()
        first = b.submit("k", 0)  # holds the worker
        await asyncio.sleep(0.05)
        late = b.submit("k", 1, deadline=time.perf_counter() + 0.1)
        await asyncio.sleep(0.3)  # its deadline passes while it waits behind the held batch
        gate.set()
        assert (await first)[0] == "k:0"
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await late
        await b.stop()
        return b.expired

    assert asyncio.run(main()) == 1
    assert [p for _, ps in log for p in ps] == [0]  # the late request cost nothing


def test_learned_cost_refuses_what_cannot_finish_and_sizes_batches_to_the_deadline():
    log, overruns = [], []

    def run(key, payloads):  # 0.1 s per unit of work
        log.append(list(payloads))
        time.sleep(0.1 * len(payloads))
        return payloads

    async def main():
        b = MicroBatcher(run, max_batch_size=8, max_wait_s=0.0, on_batch=lambda n, s, over: overruns.append(over))
        await b.start()
        await b.submit("k", "warm")
        assert b.sec_per_unit == pytest.approx(0.1, rel=0.5)
        with pytest.raises(Overloaded, match="would miss its deadline") as e:
            b.submit("k", "x", cost=4, deadline=time.perf_counter() + 0.2)  # 0.4 s of work, 0.2 s left
        assert e.value.wait_s == 0.0  # nothing queued: it is the request itself that is too big
        hold = b.submit("k", "hold")  # occupies the worker while the next ones queue up
        await asyncio.sleep(0.02)
        deadline = time.perf_counter() + 0.1 + 0.35  # the held batch, then room for about three units
        futs = [b.submit("k", i, deadline=deadline) for i in range(3)]
        await hold
        res = await asyncio.gather(*futs, return_exceptions=True)
        await b.stop()
        return res

    res = asyncio.run(main())
    done = [r for r in res if not isinstance(r, Exception)]
    assert done and all(isinstance(r, DeadlineExceeded) for r in res if isinstance(r, Exception))
    assert max(len(p) for p in log[2:]) <= 3  # no batch bigger than the deadline allowed
    assert max(overruns) < 0.1  # no batch ran on for long past its callers' deadline
