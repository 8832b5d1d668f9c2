"""What the serving tests share: where PostgreSQL is, and how a missing service is reported."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import sqlalchemy as sa


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


def fresh_pg() -> str:
    """A new empty database on the test server, so tests do not see each other's rows."""
    base = sa.engine.make_url(postgres_url())
    name = f"ragar_{uuid.uuid4().hex[:12]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


def admin_sql(sql: str) -> None:
    eng = sa.create_engine(sa.engine.make_url(postgres_url()), isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(sql))
    eng.dispose()


def drop_pg(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
