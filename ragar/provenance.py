"""Where a result came from: the command line, the commit (and whether the tree had uncommitted
changes) and the date, recorded in every results JSON so ``make results`` can rerun it and a reader
can tell which code measured a number. Shared by the CLI's evaluations and ``benchmarks.run``."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


_AT_START: dict | None = None


def code_state() -> dict:
    """``{"commit", "dirty"}`` of the checkout now."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def record_start() -> None:
    """Remember the code as it is when a long run starts: a results JSON is written at the end, and a
    commit made while an evaluation ran for half an hour must not be credited with its numbers."""
    global _AT_START
    _AT_START = code_state()


def run_record(program: str, argv: list[str] | None = None) -> dict:
    """``{"command", "commit", "dirty", "date"}`` for ``program`` run with ``argv`` (default
    ``sys.argv[1:]``). Paths inside the repository are written relative to it, so the record reads
    the same in any checkout; ``commit`` and ``dirty`` are the code's at :func:`record_start` (the
    CLI and ``benchmarks.run`` call it first), ``None`` outside a git checkout."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": " ".join([program, *(a.replace(f"{ROOT}/", "") for a in args)]),
            **(_AT_START or code_state()), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
