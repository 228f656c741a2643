"""One typed settings object, read once from ``NEXTBEST_*`` environment variables.

With nothing set, everything runs on the embedded defaults inside one state folder
(``NEXTBEST_HOME``, default ``./.nextbest``). Unknown ``NEXTBEST_*`` variables and invalid values
fail at start with a message naming the variable, so a typo never silently falls back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.events import TimeBounds
from training.quality import DEFAULT_MIN_ROC_AUC, DEFAULT_MIN_TOP_DECILE_LIFT, QualityFloor

PREFIX = "NEXTBEST_"
CHECKPOINT_SINKS = ("folder", "kafka")


class SettingsError(RuntimeError):
    """Raised at start when the environment does not describe a valid configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    home: Path = Field(Path(".nextbest"), description="State folder of the embedded defaults.")
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    event_transport: Literal["local", "kafka"] = "local"
    kafka_bootstrap_servers: Annotated[str, Field(min_length=1)] = "127.0.0.1:9092"
    topic_namespace: Annotated[str, Field(pattern=r"^([a-z0-9-]+\.)?$")] = ""
    consumer_group: Annotated[str, Field(min_length=1, max_length=200)] = "nextbest-stream"
    #: Partitions of the local event log, fixed when it is first written: a stream worker
    #: process per partition (``nextbest stream --partitions``) uses a machine's cores.
    local_partitions: Annotated[int, Field(ge=1, le=64)] = 1

    allowed_lateness_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 72.0
    #: Every time from outside (event times, consent and feedback times) must lie within these
    #: bounds of the server's clock: at most this far ahead (devices' and upstream systems'
    #: clock skew)...
    max_clock_skew_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    #: ...and at most this far behind (the horizon of history a load or backfill may bring).
    max_event_age_days: Annotated[float, Field(gt=0, le=36_500)] = 400.0
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    #: How far the stream may be behind the clock, or a row behind its next change (a
    #: midnight's timers), before serving calls a customer's activity features stale.
    allowed_feature_lag_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 15.0

    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    feast_project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = "nextbest"

    database_url: str | None = Field(None, description="Operational store; default SQLite.")
    mlflow_tracking_uri: str | None = Field(None, description="Default: SQLite in the home.")
    model_alias: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")] = "champion"
    #: How often a running API asks the registry where the alias points (0: never).
    model_refresh_seconds: Annotated[float, Field(ge=0, le=86_400)] = 30.0
    #: The quality floor (training/quality.py): a model whose test figures fall below it is
    #: neither promoted nor served, and its need's actions are withheld (``NO_MODEL``).
    model_min_roc_auc: Annotated[float, Field(ge=0, le=1)] = DEFAULT_MIN_ROC_AUC
    model_min_top_decile_lift: Annotated[float, Field(ge=0, le=10)] = DEFAULT_MIN_TOP_DECILE_LIFT

    #: JSON file of API keys and roles (see service/entrypoints/auth.py); development generates one.
    api_keys_file: Path | None = None

    #: The audit log's name in its signed checkpoints (the ``tlog-checkpoint`` origin line):
    #: one per log, never reused.
    audit_origin: Annotated[str, Field(pattern=r"^[!-*,-~]{1,200}$")] = "nextbest.local/audit"
    #: The checkpoint signing key (``PRIVATE+KEY+...``), given as a secret in the environment
    #: or as a file; never kept in the operational store. Development generates one under
    #: the home; production refuses to write the log without one.
    audit_signing_key: SecretStr | None = None
    audit_signing_key_file: Path | None = None
    #: Further verifier keys trusted when reading checkpoints (one per line): keys retired
    #: after a rotation, whose checkpoints stay valid.
    audit_verifier_keys_file: Path | None = None
    #: A checkpoint is published every this many records a process wrote, or this many
    #: seconds after the first of them, whichever comes first, and at a graceful shutdown.
    audit_checkpoint_records: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    audit_checkpoint_seconds: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    #: Where checkpoints are published, comma-separated: ``folder`` (the embedded default)
    #: and ``kafka`` (topic ``nextbest.audit.checkpoints.v1``).
    audit_checkpoint_sinks: str = "folder"
    #: The folder sink's place (default: ``checkpoints`` in the home).
    audit_checkpoint_dir: Path | None = None
    #: The compliance policy the gate applies (default: the one packaged in ``consent/``): a
    #: bank's own copy, named by its content hash in every decision record.
    policy_file: Path | None = None

    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    #: API processes on one host (``nextbest serve``): one per core. Each decides on its own;
    #: they share only the stores (the audit chain's lock orders their appends).
    api_workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: Requests per second per API key, refilled continuously, and how many may come at once
    #: (per process: N replicas allow N times as much).
    rate_limit_per_second: Annotated[float, Field(gt=0, le=1_000_000)] = 1000.0
    rate_limit_burst: Annotated[int, Field(ge=1, le=10_000_000)] = 2000
    #: Decisions a process takes on at once (running or waiting for a turn); one more gets
    #: 503 ``overloaded`` at once, so a stalled database cannot make requests pile up.
    max_decisions_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 128
    #: Largest request body accepted (413 beyond): 500 events fit with room to spare.
    max_request_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: Path) -> Path:
        return home.expanduser().absolute()

    @field_validator("audit_checkpoint_sinks")
    @classmethod
    def _sinks(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - set(CHECKPOINT_SINKS))
        if not names or unknown:
            raise ValueError(f"must name one or more of {', '.join(CHECKPOINT_SINKS)}")
        return ",".join(dict.fromkeys(names))

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return url

    @property
    def allowed_lateness_us(self) -> int:
        return int(self.allowed_lateness_hours * 3600 * 1_000_000)

    @property
    def time_bounds(self) -> TimeBounds:
        return TimeBounds(
            ahead=timedelta(seconds=self.max_clock_skew_seconds),
            behind=timedelta(days=self.max_event_age_days),
        )

    @property
    def quality_floor(self) -> QualityFloor:
        return QualityFloor(self.model_min_roc_auc, self.model_min_top_decile_lift)

    @property
    def operational_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'nextbest.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def checkpoint_sinks(self) -> tuple[str, ...]:
        return tuple(self.audit_checkpoint_sinks.split(","))

    @property
    def checkpoint_dir(self) -> Path:
        return self.audit_checkpoint_dir or self.home / "checkpoints"

    def topic(self, name: str) -> str:
        return f"{self.topic_namespace}{name}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``), refusing unknown variables."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in environ if k.upper().startswith(PREFIX) and k.upper() not in known)
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {
        name: environ[PREFIX + name.upper()]
        for name in Settings.model_fields
        if PREFIX + name.upper() in environ
    }
    try:
        # Values are passed explicitly so that exactly ``environ`` is read, not os.environ too.
        return Settings.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None
