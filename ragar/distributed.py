"""Sharded batch jobs that run under ``accelerate launch``: split by user id, resumable, merged.

Work is cut into a fixed number of *units* by a stable hash of the user id (sha256, never Python's
salted ``hash``). The number of units depends on the input only, not on how many processes run:
process ``r`` of ``w`` takes the units ``u`` with ``u % w == r``. Each unit is computed in the same
batches whichever process runs it, and every row's seed comes from the row itself, so the merged
output of a run on ``w`` processes equals a one-process run with the same seeds.

A unit's table is written last and atomically (a temporary name, then ``os.replace``), after its
images: a crash leaves a unit either whole or absent. Rerunning the same command skips the whole
units and redoes the absent ones (rewriting any images a killed unit left, with the same bytes),
so a resumed run has neither duplicates nor gaps. The manifest holds the settings; a rerun with
other settings into the same directory is refused rather than mixed.

Processes learn their rank from ``accelerate``'s :class:`~accelerate.PartialState`. On a machine
without CUDA it must be told ``cpu=True`` to form a gloo group: ``accelerate launch --multi_gpu
--num_processes 2`` (or ``torchrun --nproc_per_node 2``) then starts two processes that share the
work over gloo; ``accelerate launch --cpu --num_processes 2`` starts only one (seen on accelerate
1.15).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl


def unit_of(key: str, units: int) -> int:
    """The unit a user id belongs to: stable across processes, machines and Python runs."""
    return int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "big") % units


def stable_seed(base: int, *parts: object) -> int:
    """A per-row seed from the row's own identity, so it does not depend on which process runs it."""
    h = hashlib.sha256(":".join(map(str, (base, *parts))).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def units_for(rows: int, unit_size: int) -> int:
    """How many units ``rows`` rows are cut into (a function of the input alone)."""
    if unit_size < 1:
        raise ValueError(f"unit size must be at least 1, got {unit_size}")
    return max(1, -(-rows // unit_size))


def assign_units(user_ids: Sequence[str], unit_size: int) -> np.ndarray:
    """The unit of each row, for ``len(user_ids)`` rows cut into units of about ``unit_size``."""
    units = units_for(len(user_ids), unit_size)
    return np.asarray([unit_of(u, units) for u in user_ids], dtype=np.int64)


@dataclass
class Processes:
    """This process's place among the launched ones."""

    index: int = 0
    count: int = 1

    @property
    def is_main(self) -> bool:
        return self.index == 0


def processes() -> Processes:
    """Rank and world size under ``accelerate launch`` / ``torchrun``; one process otherwise.

    The gloo group is only formed when a launcher set ``WORLD_SIZE`` above 1, so a plain command
    never opens a port."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    atexit.unregister(close_group)  # once, however often a command asks
    atexit.register(close_group)
    return Processes(state.process_index, state.num_processes)


def close_group() -> None:
    """Destroy the launched process group while the interpreter is still whole. A process that exits
    with its gloo group open can die in finalisation with SIGABRT ("terminate called without an
    active exception": gloo's threads still hold work objects; pytorch/pytorch#190489). CI saw it
    once, in the second process of the two-process ranker training, after the rankers were saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedJob:
    """The on-disk state of one sharded job: ``manifest.json``, ``shards/<task>.parquet``, ``merged.parquet``.

    ``tasks`` are (label, unit) pairs, e.g. (method, unit) for the replay, one per unit that holds
    rows (an empty unit is no task); a process owns the tasks whose unit falls to it."""

    def __init__(self, out: str | Path, settings: dict, tasks: list[tuple[str, int]], procs: Processes | None = None):
        self.out = Path(out)
        self.shards = self.out / "shards"
        self.procs = procs or Processes()
        self.tasks = tasks
        settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the manifest
        self.shards.mkdir(parents=True, exist_ok=True)
        mpath = self.out / "manifest.json"
        if mpath.exists():
            old = json.loads(mpath.read_text())
            if old.get("settings") != settings:
                raise ValueError(f"{self.out} holds a job with other settings ({mpath}); use another --out")
        else:
            text = json.dumps({"settings": settings, "tasks": len(tasks)}, indent=2)
            self._replace(mpath, lambda tmp: tmp.write_text(text))

    def path(self, label: str, unit: int) -> Path:
        return self.shards / f"{label}-{unit:05d}.parquet"

    def done(self, label: str, unit: int) -> bool:
        return self.path(label, unit).exists()

    def mine(self) -> Iterator[tuple[str, int]]:
        """The tasks of this process that are not done yet, in order."""
        for label, unit in self.tasks:
            if unit % self.procs.count == self.procs.index and not self.done(label, unit):
                yield label, unit

    def pending(self) -> int:
        return sum(not self.done(label, unit) for label, unit in self.tasks)

    def write(self, label: str, unit: int, table: pl.DataFrame) -> None:
        """Atomically: a reader (or a resumed run) sees the whole table or nothing."""
        self._replace(self.path(label, unit), table.write_parquet)

    def merge(self, sort_by: list[str]) -> pl.DataFrame:
        """Every task's table, concatenated and sorted; written as ``merged.parquet``."""
        missing = [f"{label}-{unit:05d}" for label, unit in self.tasks if not self.done(label, unit)]
        if missing:
            raise RuntimeError(f"{self.out}: {len(missing)} shards are missing ({', '.join(missing[:5])}...); "
                               "rerun the same command to finish them")
        merged = pl.concat([pl.read_parquet(self.path(label, unit)) for label, unit in self.tasks],
                           how="vertical_relaxed").sort(sort_by)
        self._replace(self.out / "merged.parquet", merged.write_parquet)
        return merged

    def _replace(self, path: Path, write: Callable[[Path], object]) -> None:
        """``write`` to a temporary name of this process's own, then rename over ``path``: readers
        and resumed runs see the whole file or none, and processes never share a temporary file."""
        tmp = path.with_name(f".{path.name}.{self.procs.index}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)
