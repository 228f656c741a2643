"""Backends under contract: each test runs against the embedded default and the real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text

from consent.stores.store import connect


@pytest.fixture(params=["sqlite", "postgres"])
def operational_engine(request, tmp_path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'ops.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_schema(request.getfixturevalue("postgres_url")) as engine:
        yield engine


@contextmanager
def fresh_schema(base: str) -> Iterator[Engine]:
    """An engine on a new schema of the real server, dropped afterwards."""
    schema = f"t{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {schema}"))
    engine = connect(f"{base}?options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()
