"""Prometheus metrics of one service instance (its own registry, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragar_requests_total", "HTTP requests by route, arm and status",
                                ["route", "arm", "status"], registry=r)
        self.latency = Histogram("ragar_request_latency_seconds", "HTTP latency by route and arm",
                                 ["route", "arm"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ragar_batch_size", "requests per generator call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256), registry=r)
        self.queue_depth = Gauge("ragar_queue_depth", "generation requests waiting for a batch", registry=r)
        self.generation = Histogram("ragar_generation_seconds", "seconds per generator call (whole batch)",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("ragar_rejected_total", "generation requests not served, by reason",
                                ["reason"], registry=r)
        self.events = Counter("ragar_feedback_total", "feedback events stored, by arm and event",
                              ["arm", "event"], registry=r)
        self.busy = Gauge("ragar_generator_busy", "1 while a batch is generating", registry=r)
        self.last_batch_end = Gauge("ragar_last_batch_end_timestamp_seconds", "wall clock when the last batch "
                                    "ended", registry=r)
        self.overrun = Gauge("ragar_batch_overrun_max_seconds", "the longest any batch ran past the latest "
                             "deadline of the requests in it", registry=r)
        self._max_overrun = 0.0
        self.batch_max = Gauge("ragar_batch_seconds_max", "the longest generator call so far", registry=r)
        self._max_batch = 0.0

    def describe_device(self, runtime) -> None:
        """``ragar_device_info`` (device, card, dtype) and, on CUDA, the memory the process holds
        there, read at each scrape."""
        Gauge("ragar_device_info", "where the models run", ["device", "name", "dtype"], registry=self.registry
              ).labels(str(runtime.device), runtime.card, runtime.dtype_name).set(1)
        if runtime.is_cuda:
            mem = Gauge("ragar_device_memory_bytes", "GPU memory this process holds (torch caching allocator)",
                        ["kind"], registry=self.registry)
            for kind in ("allocated", "reserved"):
                mem.labels(kind).set_function(lambda k=kind: runtime.memory()[k])

    def observe_batch(self, size: int, seconds: float, overrun_s: float = 0.0) -> None:
        self.batch_size.observe(size)
        self.generation.observe(seconds)
        self.last_batch_end.set_to_current_time()
        if seconds > self._max_batch:
            self._max_batch = seconds
            self.batch_max.set(seconds)
        if overrun_s > self._max_overrun:
            self._max_overrun = overrun_s
            self.overrun.set(overrun_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
