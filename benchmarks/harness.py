"""Benchmark rows: each a measurement and the baseline it is compared with, timed in the same run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    bench: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        r = self.value / self.baseline_value
        return r if self.higher_is_better else 1 / r

    def to_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


def timeit(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` runs after ``warmup`` (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine() -> dict:
    import torch

    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


@dataclass
class Measured:
    """One command run from outside: its exit status, wall time, output and peak memory."""

    returncode: int
    seconds: float
    peak_rss_gib: float
    stdout: str
    stderr: str


#: runs argv[2:] as its child, then writes that child's peak ru_maxrss (KiB) to the file argv[1]
_PEAK = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def run_measured(cmd: list[str], *, cwd: str | Path | None = None, env: dict | None = None) -> Measured:
    """Run ``cmd`` as a child process and measure it from outside.

    The peak is ``ru_maxrss`` over the command's processes: the largest resident set of it or any
    descendant it waited for (a world build's render workers, a scale-out run's shards). Linux folds
    the forking process's resident set into a child's ``ru_maxrss`` (fork, or vfork then exec), so
    a caller holding torch would read its own size; the command is therefore started by a fresh,
    small Python whose ``RUSAGE_CHILDREN`` holds the command alone. Output goes to temporary
    files, not pipes, so a chatty command cannot fill a pipe and stall.
    """
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        peak = Path(d) / "maxrss"
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", _PEAK, str(peak), *cmd], cwd=cwd, env=env, stdout=out,
                               stderr=err)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        kib = int(peak.read_text()) if peak.exists() else 0  # absent only when the command could not start
        return Measured(code, seconds, kib / 2**20, out.read(), err.read())
