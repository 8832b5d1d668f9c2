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


def run_record(program: str, argv: list[str] | None = None) -> dict:
    """``{"command", "commit", "dirty", "date"}`` for ``program`` run with ``argv`` (default
    ``sys.argv[1:]``). Paths inside the repository are written relative to it, so the record reads
    the same in any checkout; ``commit`` and ``dirty`` are ``None`` outside a git checkout."""
    args = sys.argv[1:] if argv is None else argv
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"command": " ".join([program, *(a.replace(f"{ROOT}/", "") for a in args)]),
            "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(status) if status is not None else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
