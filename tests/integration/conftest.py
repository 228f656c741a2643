"""Backends under contract: each test runs against the embedded default and the real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from consent.store import connect


@pytest.fixture(params=["sqlite", "postgres"])
def operational_engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'ops.db'}")
        yield engine
        engine.dispose()
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {schema}"))
    engine = connect(f"{base}?options=-csearch_path%3D{schema}")
    yield engine
    engine.dispose()
    with admin.begin() as connection:
        connection.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()
