"""A decide benchmark state built where another was kept replaces it, outside the folder too."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import create_engine, text

from bench.state import Backends, State, new_state, replace_state


def _schema_exists(url: str, schema: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                {"s": schema},
            ).first()
    finally:
        engine.dispose()
    return found is not None


@pytest.mark.postgres
@pytest.mark.redis
def test_a_new_build_drops_the_kept_states_schema_and_online_rows(
    tmp_path, postgres_url, redis_url
) -> None:
    backends = Backends(redis_url, postgres_url)
    old = new_state(tmp_path, backends, customers=1, days=1)
    old.save()
    client = redis.Redis.from_url(redis_url)
    key = f"online-row-of-{old.project}".encode()  # Feast's keys end with the project name
    client.set(key, b"x")
    try:
        assert _schema_exists(postgres_url, str(old.schema))

        dropped = replace_state(tmp_path, backends)

        assert dropped == {"schema": old.schema, "online_keys": 1}
        assert not _schema_exists(postgres_url, str(old.schema))
        assert client.exists(key) == 0
        assert not old.manifest.exists()
        assert replace_state(tmp_path, backends) is None  # nothing kept any more
    finally:
        client.delete(key)
        client.close()


@pytest.mark.postgres
def test_a_state_on_other_backends_is_not_replaced_blindly(tmp_path, postgres_url) -> None:
    kept = new_state(tmp_path, Backends(None, postgres_url), customers=1, days=1)
    kept.save()
    try:
        with pytest.raises(SystemExit, match="other backends"):
            replace_state(tmp_path, Backends(None, "sqlite"))
        assert _schema_exists(postgres_url, str(kept.schema))
        assert State.load(tmp_path) == kept
    finally:
        replace_state(tmp_path, Backends(None, postgres_url))
