"""Micro-batching: concurrent generation requests share one generator call.

The generator's cost per image falls with batch size (bench: 1.8x images/s at batch 8 on CPU), so
the service holds the first request of a batch for at most ``max_wait_s`` while others arrive, then
runs up to ``max_batch_size`` requests with the same settings key (arm settings: method, n, guidance,
generator) in one call on a single worker thread. Requests with another key wait for the next batch.

* **Bounded queue**: more than ``queue_size`` pending requests raise :class:`QueueFull` at once
  (the API answers 429 with Retry-After) instead of growing latency without bound.
* **Timeouts and cancellation**: a request whose caller stopped waiting (timeout, disconnected
  client) is cancelled; if its batch has not started it is dropped and costs nothing.
* **Deadlines**: each request may carry a deadline. The batcher learns what a unit of work (one
  image) costs from the batches it ran, and with that (a) refuses at once (:class:`Overloaded`, a
  503 with Retry-After) a request that could not finish before its deadline behind the work already
  queued, (b) fails a queued request whose deadline has passed, or cannot be met even alone
  (:class:`DeadlineExceeded`), before it costs anything, and (c) sizes each batch so that it ends
  before the earliest deadline in it. So no batch starts for callers who are gone, and work
  outlives its callers by at most the one batch that was running when they left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

#: (max batch size in requests, max wait in seconds, queue bound) when the settings name none. A
#: GPU's throughput grows with the batch up to hundreds of images (docs/SCALING.md), so it batches
#: more and holds a longer queue; a 2-core CPU gains little past 8 requests.
CPU_BATCHING = (8, 0.020, 64)
GPU_BATCHING = (64, 0.010, 1024)


class QueueFull(RuntimeError):
    """The pending queue is at its bound; retry later."""


class Overloaded(RuntimeError):
    """The work ahead would not let this request finish before its deadline; retry after ``wait_s``."""

    def __init__(self, message: str, wait_s: float):
        super().__init__(message)
        self.wait_s = wait_s


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed (or could not be met) before its batch started."""


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future
    cost: float = 1.0
    deadline: float | None = None  # time.perf_counter() seconds
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchInfo:
    """What the worker tells each request about the batch it ran in."""

    size: int
    queue_s: float
    run_s: float


class MicroBatcher:
    """``run_batch(key, payloads) -> results`` runs on one worker thread; ``submit`` awaits a result.

    ``on_batch(size, seconds, overrun_seconds)``, ``on_depth(depth)`` and ``on_busy(busy)`` feed the
    metrics; ``overrun_seconds`` is how long the batch ran past the latest deadline in it."""

    #: weight of the newest batch in the running estimate of seconds per unit of work
    EWMA = 0.3

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], list[Any]], *, max_batch_size: int = 8,
                 max_wait_s: float = 0.02, queue_size: int = 64,
                 on_batch: Callable[[int, float, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None,
                 on_busy: Callable[[bool], None] | None = None):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.on_batch = on_batch or (lambda size, s, over: None)
        self.on_depth = on_depth or (lambda d: None)
        self.on_busy = on_busy or (lambda b: None)
        self._pending: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragar-generate")
        self.cancelled = 0  # requests whose caller stopped waiting (timeout, disconnect)
        self.expired = 0  # requests failed by their deadline before they ran
        self.sec_per_unit: float | None = None  # learned from the batches run so far
        self.busy = False
        self._running_until = 0.0  # estimated end of the running batch (perf_counter)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def estimated_wait_s(self) -> float:
        """Seconds until the work running and queued now is done, by the learned cost (0 if unknown)."""
        if self.sec_per_unit is None:
            return 0.0
        running = max(0.0, self._running_until - time.perf_counter()) if self.busy else 0.0
        return running + sum(j.cost for j in self._pending if not j.future.done()) * self.sec_per_unit

    def submit(self, key: Hashable, payload: Any, *, cost: float = 1.0, deadline: float | None = None
               ) -> asyncio.Future:
        """Enqueue one request of ``cost`` units (images) that must finish by ``deadline``
        (``time.perf_counter()`` seconds); the future resolves to ``(result, BatchInfo)``. Cancel
        it to abandon."""
        self._drop_done()
        if len(self._pending) >= self.queue_size:
            raise QueueFull(f"{len(self._pending)} requests pending (bound {self.queue_size})")
        if deadline is not None and self.sec_per_unit is not None:
            wait = self.estimated_wait_s()
            late = time.perf_counter() + wait + cost * self.sec_per_unit - deadline
            if late > 0:
                raise Overloaded(f"about {wait:.1f} s of generation is queued ahead: this request would miss its "
                                 f"deadline by {late:.1f} s", wait)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(self._count_cancelled)
        self._pending.append(_Job(key, payload, fut, float(cost), deadline))
        self.on_depth(len(self._pending))
        assert self._wake is not None, "start() the batcher first"
        self._wake.set()
        return fut

    def _count_cancelled(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.cancelled += 1

    def _drop_done(self) -> None:
        """Forget abandoned requests so they neither run nor count against the bound."""
        if any(j.future.done() for j in self._pending):
            self._pending = collections.deque(j for j in self._pending if not j.future.done())
            self.on_depth(len(self._pending))

    def _expire(self, job: _Job, why: str) -> None:
        job.future.set_exception(DeadlineExceeded(why))
        self.expired += 1

    def _take(self) -> list[_Job]:
        """The next batch: the oldest request's key, as many as fit ``max_batch_size`` and the
        earliest deadline among them; requests whose deadline cannot be met fail here, unrun."""
        now, spu = time.perf_counter(), self.sec_per_unit
        for job in self._pending:
            if job.deadline is not None and not job.future.done():
                if now >= job.deadline:
                    self._expire(job, "the deadline passed while the request waited in the queue")
                elif spu is not None and now + job.cost * spu > job.deadline:
                    self._expire(job, f"not enough time left before the deadline ({job.deadline - now:.1f} s) for "
                                      f"its generation (about {job.cost * spu:.1f} s)")
        self._drop_done()
        if not self._pending:
            return []
        key = self._pending[0].key
        batch, rest = [], collections.deque()
        units, first_deadline = 0.0, float("inf")
        for job in self._pending:
            fits = job.key == key and len(batch) < self.max_batch_size
            if fits and batch and spu is not None:  # the batch must end before its earliest deadline
                end = now + (units + job.cost) * spu
                fits = end <= min(first_deadline, job.deadline if job.deadline is not None else float("inf"))
            if fits:
                batch.append(job)
                units += job.cost
                if job.deadline is not None:
                    first_deadline = min(first_deadline, job.deadline)
            else:
                rest.append(job)
        self._pending = rest
        self.on_depth(len(self._pending))
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self._pending[0]
            deadline = first.enqueued + self.max_wait_s
            while (sum(j.key == first.key for j in self._pending) < self.max_batch_size
                   and time.perf_counter() < deadline and not first.future.done()):
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            units = sum(j.cost for j in batch)
            self.busy = True
            self._running_until = started + units * (self.sec_per_unit or 0.0)
            self.on_busy(True)
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, batch[0].key,
                                                     [j.payload for j in batch])
                error = None
            except Exception as e:  # the whole batch failed: every request in it gets the error
                results, error = [None] * len(batch), e
            ended = time.perf_counter()
            run_s = ended - started
            self.busy = False
            self.on_busy(False)
            if error is None and units > 0:
                spu = run_s / units
                self.sec_per_unit = spu if self.sec_per_unit is None else \
                    (1 - self.EWMA) * self.sec_per_unit + self.EWMA * spu
            deadlines = [j.deadline for j in batch if j.deadline is not None]
            overrun = max(0.0, ended - max(deadlines)) if len(deadlines) == len(batch) else 0.0
            self.on_batch(len(batch), run_s, overrun)
            for job, res in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result((res, BatchInfo(len(batch), started - job.enqueued, run_s)))
