"""Open the Feast feature store for a state folder, with the SQLite or the Redis online store."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from feast import FeatureStore, FeatureView
from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException
from feast.repo_config import RepoConfig

from feature_repo import definitions


@dataclass(frozen=True)
class StoreLocation:
    home: Path
    project: str = "nextbest"
    online: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"

    @property
    def repo_path(self) -> Path:
        return self.home / "feature_repo"

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"


def redis_connection_string(url: str) -> str:
    """``redis://host:port/db`` (the form everyone uses) as Feast's ``host:port,db=N``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {url!r}")
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = (parsed.path or "/0").strip("/") or "0"
    parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(where: StoreLocation) -> dict[str, object]:
    online: dict[str, object]
    if where.online == "redis":
        online = {"type": "redis", "connection_string": redis_connection_string(where.redis_url)}
    else:
        online = {"type": "sqlite", "path": str(where.home / "online_store.db")}
    return {
        "project": where.project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(where.repo_path / "registry.db")},
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }


def open_store(where: StoreLocation, apply: bool = True) -> FeatureStore:
    """The feature store for ``where``; with ``apply``, registers our definitions first.

    The rendered ``feature_store.yaml`` is written beside the registry so the ``feast`` CLI can
    be pointed at the same state folder. Passwords are not written to it.
    """
    where.repo_path.mkdir(parents=True, exist_ok=True)
    for view in (definitions.ACTIVITY_VIEW, definitions.PROFILE_VIEW):
        (where.offline_dir / view).mkdir(parents=True, exist_ok=True)
    config = repo_config(where)
    shown = dict(config)
    if where.online == "redis":
        shown["online_store"] = {"type": "redis", "connection_string": "${REDIS_CONNECTION}"}
    (where.repo_path / "feature_store.yaml").write_text(yaml.safe_dump(shown, sort_keys=False))
    store = FeatureStore(config=RepoConfig(repo_path=where.repo_path, **config))
    if apply:
        # Processes starting together (API replicas, workers) share one file registry: the lock
        # keeps them from writing it at once, and only a missing or changed view is applied.
        with open(where.repo_path / ".apply.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _registered(store, where):
                store.apply(definitions.build(where.offline_dir))
    return store


def _registered(store: FeatureStore, where: StoreLocation) -> bool:
    """Whether the registry already holds our feature views with the same features, sources and
    TTLs, and the feature service with the same views."""
    expected = [o for o in definitions.build(where.offline_dir) if isinstance(o, FeatureView)]
    try:
        views = [store.get_feature_view(v.name, allow_registry_cache=False) for v in expected]
        service = store.get_feature_service(definitions.ACTIVITY_SERVICE, allow_cache=False)
    except (FeatureViewNotFoundException, FeatureServiceNotFoundException):
        return False
    if sorted(p.name for p in service.feature_view_projections) != sorted(v.name for v in expected):
        return False
    return all(
        [f.name for f in view.features] == [f.name for f in wanted.features]
        and view.batch_source is not None
        and getattr(view.batch_source, "path", None) == getattr(wanted.batch_source, "path", None)
        and view.ttl == wanted.ttl
        for view, wanted in zip(views, expected, strict=True)
    )
