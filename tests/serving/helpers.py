"""What the serving tests share: where PostgreSQL is, and how a missing service is reported."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip with a plain reason on a person's machine; fail under CI=true, where nothing may skip."""
    if available:
        return
    msg = f"{what} is not available here"
    if in_ci():
        pytest.fail(f"{msg}, and CI=true forbids skipping (.ci/run installs and starts it)")
    pytest.skip(f"{msg}: install it (see .ci/run) to run this test")


def postgres_url() -> str:
    url = os.environ.get("RAGAR_TEST_POSTGRES_URL")
    require(bool(url), "PostgreSQL (RAGAR_TEST_POSTGRES_URL)")
    return url


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    require(path is not None, "Debian's chromium")
    return path
