"""Open the Feast feature store for a state folder, with the SQLite or the Redis online store.

The configuration is the repository's own ``feature_store.yaml`` (or ``feature_store.redis.yaml``),
filled in with the environment ``feast_environment`` gives: the same file and variables the stock
``feast`` CLI reads in this folder, so both see one store.
"""

from __future__ import annotations

import fcntl
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, Project
from feast.data_source import DataSource
from feast.diff.property_diff import TransitionType
from feast.feature_view import DUMMY_ENTITY
from feast.repo_config import RepoConfig
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete

from feature_repo import definitions

#: This folder: the Feast repository (configuration files and ``objects.py``).
REPO_DIR = Path(__file__).parent


@dataclass(frozen=True)
class StoreLocation:
    home: Path
    project: str = "nextbest"
    online: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"

    @property
    def registry_dir(self) -> Path:
        """The Feast registry's folder (only state: the repository is ``REPO_DIR``)."""
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


def config_file(online: Literal["sqlite", "redis"]) -> Path:
    """The repository's configuration file for an online store."""
    return REPO_DIR / ("feature_store.redis.yaml" if online == "redis" else "feature_store.yaml")


def feast_environment(where: StoreLocation) -> dict[str, str]:
    """The variables ``config_file(where.online)`` names, for ``where``: what the ``feast`` CLI
    needs in its environment to work on the same store (``FEAST_FS_YAML_FILE_PATH`` picks the
    Redis configuration)."""
    env = {"NEXTBEST_HOME": str(where.home.absolute()), "NEXTBEST_FEAST_PROJECT": where.project}
    if where.online == "redis":
        env["FEAST_REDIS_CONNECTION"] = redis_connection_string(where.redis_url)
        env["FEAST_FS_YAML_FILE_PATH"] = str(config_file("redis"))
    return env


def repo_config(where: StoreLocation) -> dict[str, object]:
    # string.Template reads ${NAME} as os.path.expandvars does (Feast's CLI expands the file with
    # it), but refuses a variable it does not know instead of leaving it in place.
    text = string.Template(config_file(where.online).read_text())
    config: dict[str, object] = yaml.safe_load(text.substitute(feast_environment(where)))
    return config


def open_store(where: StoreLocation, apply: bool = True) -> FeatureStore:
    """The feature store for ``where``; with ``apply``, registers our definitions first."""
    where.registry_dir.mkdir(parents=True, exist_ok=True)
    for view in (definitions.ACTIVITY_VIEW, definitions.PROFILE_VIEW):
        (where.offline_dir / view).mkdir(parents=True, exist_ok=True)
    # Earlier versions rendered a feature_store.yaml here, without the definitions: `feast apply`
    # run beside it would have deleted every feature view. The repository is feature_repo/.
    (where.registry_dir / "feature_store.yaml").unlink(missing_ok=True)
    store = FeatureStore(config=RepoConfig(repo_path=where.registry_dir, **repo_config(where)))
    if apply:
        # Processes starting together (API replicas, workers) share one file registry: the lock
        # keeps them from writing it at once, and only a plan with changes is applied.
        with open(where.registry_dir / ".apply.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _apply(store, repo_contents(where.project, definitions.build(where.offline_dir)))
    return store


def repo_contents(project: str, objects: list[Any]) -> RepoContents:
    """``objects`` as the ``feast`` CLI reads them from ``objects.py``: with the project of the
    configuration and Feast's placeholder entity (``repo_operations.parse_repo``)."""
    return RepoContents(
        projects=[Project(name=project, description="")],
        data_sources=[o for o in objects if isinstance(o, DataSource)],
        feature_views=[o for o in objects if isinstance(o, FeatureView)],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[*(o for o in objects if isinstance(o, Entity)), DUMMY_ENTITY],
        feature_services=[o for o in objects if isinstance(o, FeatureService)],
        permissions=[],
    )


def _apply(store: FeatureStore, repo: RepoContents) -> None:
    """What ``feast apply`` does, when ``feast plan`` shows a change: so that after it the stock
    CLI finds nothing to do."""
    registry_diff, infra_diff, infra = store.plan(repo)
    unchanged = TransitionType.UNCHANGED
    if all(d.transition_type == unchanged for d in registry_diff.feast_object_diffs) and all(
        d.transition_type == unchanged for d in infra_diff.infra_object_diffs
    ):
        return
    project = store.project
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, repo)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    # The CLI also records the online tables it made (SQLite's; Redis has none to record):
    # without the record `feast plan` would list them as still to be created.
    store.registry.update_infra(infra, project, commit=True)
