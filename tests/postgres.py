"""A scratch PostgreSQL database per test, on the server that ``.ci/run`` starts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

POSTGRES_ENV = "DRIFTGATE_TEST_POSTGRES_URL"


def admin_url() -> str:
    """The test server's URL; skips the test without one (fails it under CI)."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip(f"{POSTGRES_ENV} is not set (a postgresql+psycopg:// URL of a test server)")
    return url


@contextmanager
def scratch_database(prefix: str = "driftgate_test") -> Iterator[str]:
    """The URL of a new, empty database on the test server; dropped afterwards."""
    admin = sa.engine.make_url(admin_url())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
