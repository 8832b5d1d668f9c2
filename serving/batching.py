"""Micro-batching: concurrent generation requests share one generator call.

The generator's cost per image falls with batch size (bench: 1.8x images/s at batch 8 on CPU), so
the service holds the first request of a batch for at most ``max_wait_s`` while others arrive, then
runs up to ``max_batch_size`` requests with the same settings key (arm settings: method, n, guidance,
generator) in one call on a single worker thread. Requests with another key wait for the next batch.

* **Bounded queue**: more than ``queue_size`` pending requests raise :class:`QueueFull` at once
  (the API answers 429 with Retry-After) instead of growing latency without bound.
* **Timeouts and cancellation**: a request whose caller stopped waiting (timeout, disconnected
  client) is cancelled; if its batch has not started it is dropped and costs nothing.
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


class QueueFull(RuntimeError):
    """The pending queue is at its bound; retry later."""


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchInfo:
    """What the worker tells each request about the batch it ran in."""

    size: int
    queue_s: float
    run_s: float


class MicroBatcher:
    """``run_batch(key, payloads) -> results`` runs on one worker thread; ``submit`` awaits a result.

    ``on_batch(size, seconds)`` and ``on_depth(depth)`` feed the metrics."""

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], list[Any]], *, max_batch_size: int = 8,
                 max_wait_s: float = 0.02, queue_size: int = 64,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.on_batch = on_batch or (lambda size, s: None)
        self.on_depth = on_depth or (lambda d: None)
        self._pending: collections.deque[_Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragar-generate")
        self.cancelled = 0  # requests whose caller stopped waiting (timeout, disconnect)

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

    def submit(self, key: Hashable, payload: Any) -> asyncio.Future:
        """Enqueue one request; the future resolves to ``(result, BatchInfo)``. Cancel it to abandon."""
        self._drop_done()
        if len(self._pending) >= self.queue_size:
            raise QueueFull(f"{len(self._pending)} requests pending (bound {self.queue_size})")
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(self._count_cancelled)
        self._pending.append(_Job(key, payload, fut))
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

    def _take(self) -> list[_Job]:
        self._drop_done()
        if not self._pending:
            return []
        key = self._pending[0].key
        batch, rest = [], collections.deque()
        for job in self._pending:
            (batch if job.key == key and len(batch) < self.max_batch_size else rest).append(job)
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
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, batch[0].key,
                                                     [j.payload for j in batch])
                error = None
            except Exception as e:  # the whole batch failed: every request in it gets the error
                results, error = [None] * len(batch), e
            run_s = time.perf_counter() - started
            self.on_batch(len(batch), run_s)
            for job, res in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result((res, BatchInfo(len(batch), started - job.enqueued, run_s)))
