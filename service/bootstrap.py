"""The composition root: settings are read once and every adapter is wired here.

The app, the worker and the CLI all build what they need from a ``Container``; tests build one
from their own ``Settings`` (pointing at real Kafka, Redis and PostgreSQL, or at a temporary
state folder) rather than patching anything deep inside.

Each part's module is imported when the part is first built, so a process that needs the audit
log alone (``nextbest audit verify``) never loads Feast, MLflow or LightGBM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from service.adapters.transport import ALERTS_TOPIC, Producer
from service.settings import Settings
from service.stream_parts import StreamParts

if TYPE_CHECKING:
    from feast import FeatureStore
    from sqlalchemy import Engine

    from consent.rules.catalog import Catalog
    from consent.rules.policy import Policy
    from consent.rules.signed_note import Signer
    from consent.stores.audit.log import AuditLog
    from consent.stores.audit.proofs import Proofs
    from consent.stores.audit.sinks import Sink
    from consent.stores.contacts import ContactHistory
    from consent.stores.customers import CustomerDirectory
    from consent.stores.erasure import ErasureRegister
    from consent.stores.reads import GateReads
    from consent.stores.registry import ConsentRegistry
    from consent.verify_audit import VerifierKey
    from feature_repo.store import StoreLocation
    from service.adapters.alert_publisher import AlertFeed
    from service.adapters.alert_store import AlertStore
    from service.adapters.features.feast_features import FeastFeatures
    from service.adapters.models import ModelSet
    from service.entrypoints.auth import KeyRing
    from service.usecases.alert_inbox import AlertInbox
    from service.usecases.alert_policy import AlertPolicy
    from service.usecases.alert_runner import AlertRunner
    from service.usecases.alerter import Alerter
    from service.usecases.decisions import DecisionService
    from service.usecases.regate import AlertGate


@dataclass
class Container(StreamParts):
    settings: Settings

    def __post_init__(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Give back every database connection this container opened."""
        made = self.__dict__  # cached properties that were built
        if "gate_reads" in made:
            made["gate_reads"].close()
        if "audit" in made:
            made["audit"].close()
        if "engine" in made:
            made["engine"].dispose()
        if "features" in made and made["features"].pipeline is not None:
            made["features"].pipeline.close()

    def close_audit(self) -> None:
        """Publish a checkpoint of what this process wrote, give back the audit connection."""
        if "audit" in self.__dict__:
            self.__dict__["audit"].close()

    async def close_async(self) -> None:
        """Give back what decisions opened on the running event loop (the API's lifespan)."""
        if "decisions" in self.__dict__:
            await self.__dict__["decisions"].close_async()

    # --- operational store ---
    @cached_property
    def engine(self) -> Engine:
        from consent.stores.store import connect

        return connect(self.settings.operational_url)

    @cached_property
    def registry(self) -> ConsentRegistry:
        from consent.stores.registry import ConsentRegistry

        return ConsentRegistry(self.engine)

    @cached_property
    def directory(self) -> CustomerDirectory:
        from consent.stores.customers import CustomerDirectory

        return CustomerDirectory(self.engine)

    @cached_property
    def contacts(self) -> ContactHistory:
        from consent.stores.contacts import ContactHistory

        return ContactHistory(self.engine)

    @cached_property
    def gate_reads(self) -> GateReads:
        """The gate's reads for a decision (one round trip on PostgreSQL)."""
        from consent.stores.reads import gate_reads

        return gate_reads(
            self.registry, self.directory, self.contacts, self.settings.operational_url
        )

    @cached_property
    def erasures(self) -> ErasureRegister:
        from consent.stores.erasure import ErasureRegister

        return ErasureRegister(self.engine)

    @cached_property
    def audit(self) -> AuditLog:
        """The audit log, publishing signed checkpoints of what this process writes."""
        from service.adapters.audit_checkpoints import audit_log

        return audit_log(self.settings, self.engine, lambda: self.audit_signer)

    @cached_property
    def audit_proofs(self) -> Proofs:
        from service.adapters.audit_checkpoints import proofs

        return proofs(self.settings, self.audit, self.audit_verifier_keys)

    @cached_property
    def audit_signer(self) -> Signer:
        """The checkpoint signing key (``AuditKeyError`` without one in production)."""
        from service.adapters.audit_checkpoints import load_signer

        return load_signer(self.settings)

    def audit_verifier_keys(self) -> list[VerifierKey]:
        """The keys whose checkpoints verification trusts (``verifier_keys``)."""
        from service.adapters.audit_checkpoints import verifier_keys

        return verifier_keys(self.settings, lambda: self.audit_signer)

    @property
    def checkpoint_sinks(self) -> list[Sink]:
        """Where the log's signed checkpoints are published and read back from."""
        checkpointer = self.audit.checkpointer
        return [] if checkpointer is None else checkpointer.sinks

    @cached_property
    def catalog(self) -> Catalog:
        from consent.rules.catalog import Catalog

        return Catalog.load()

    @cached_property
    def policy(self) -> Policy:
        from consent.rules.policy import Policy

        return Policy.load(self.settings.policy_file)

    # --- features ---
    @cached_property
    def store_location(self) -> StoreLocation:
        from feature_repo.store import StoreLocation

        s = self.settings
        return StoreLocation(
            home=s.home, project=s.feast_project, online=s.online_store, redis_url=s.redis_url
        )

    @cached_property
    def feature_store(self) -> FeatureStore:
        from feature_repo.store import open_store

        return open_store(self.store_location)

    @cached_property
    def features(self) -> FeastFeatures:
        from datetime import timedelta

        from service.adapters.features.feast_features import FeastFeatures
        from service.adapters.features.watermark import PipelineWatermark

        return FeastFeatures(
            self.feature_store,
            self.store_location,
            PipelineWatermark(self.watermark_store()),
            timedelta(minutes=self.settings.allowed_feature_lag_minutes),
        )

    # --- models ---
    @cached_property
    def models(self) -> ModelSet:
        """The served models, loaded now; ``refresh()`` follows the registry alias."""
        from service.adapters.models import ModelSet
        from service.usecases.promotion import Promotions

        settings = self.settings
        models = ModelSet(
            settings.tracking_uri,
            settings.model_alias,
            floor=settings.quality_floor,
            provenance=Promotions(lambda: self.audit),
        )
        models.refresh()
        return models

    @cached_property
    def decisions(self) -> DecisionService:
        from service.usecases.decisions import DecisionService

        return DecisionService(
            self.registry,
            self.directory,
            self.contacts,
            self.features,
            self.models,
            self.catalog,
            self.policy,
            self.audit,
            self.gate_reads,
        )

    # --- RM alerts ---
    @cached_property
    def alert_policy(self) -> AlertPolicy:
        from service.usecases.alert_policy import AlertPolicy

        return AlertPolicy.load(self.catalog)

    @cached_property
    def alert_store(self) -> AlertStore:
        from service.adapters.alert_store import AlertStore

        return AlertStore(self.engine)

    @cached_property
    def alert_feed(self) -> AlertFeed:
        """Alerts published to ``nextbest.alerts.v1`` through a producer made at first use."""
        from service.adapters.alert_publisher import AlertFeed, alerts_publisher

        made: list[Producer] = []

        def producer() -> Producer:
            if not made:
                made.append(self.producer())
            return made[0]

        topic = self.settings.topic(ALERTS_TOPIC)
        return AlertFeed(lambda alerts: alerts_publisher(producer(), topic)(alerts))

    @cached_property
    def alerter(self) -> Alerter:
        """Raises alerts from the stream (``alert_runner`` runs it)."""
        from service.usecases.alerter import Alerter

        return Alerter(
            lambda: self.decisions,
            self.alert_store,
            self.alert_policy,
            self.catalog,
            self.alert_memory(),
            self.alert_feed,
            scores=self.features.online,
        )

    @cached_property
    def alert_inbox(self) -> AlertInbox:
        """Alerts reaching the RM: opened, listed, disposed, each passing the gate again."""
        from service.usecases.alert_inbox import AlertInbox

        return AlertInbox(
            self.alert_store, self.alert_gate, self.contacts, self.alert_policy, self.alert_feed
        )

    @cached_property
    def alert_runner(self) -> AlertRunner:
        """The alerter's thread beside the stream worker (``start()`` runs it)."""
        from service.usecases.alert_runner import AlertRunner

        return AlertRunner(self.alerter, self.alert_inbox, self.alert_policy.debounce_seconds)

    @cached_property
    def alert_gate(self) -> AlertGate:
        """The gate again when an alert reaches the RM: the decisions' reads, policy and log."""
        from service.usecases.regate import AlertGate

        return AlertGate(
            self.gate_reads, self.policy, self.catalog, self.audit, self.alert_policy.regate_rules
        )

    # --- who may call ---
    @cached_property
    def keyring(self) -> KeyRing:
        from service.entrypoints.auth import AuthConfigError, KeyRing, development_keys

        path = self.settings.api_keys_file
        development = self.settings.environment == "development"
        if path is None:
            if not development:
                raise AuthConfigError("production needs NEXTBEST_API_KEYS_FILE")
            path = development_keys(self.settings.home)
        return KeyRing.load(path, allow_plain=development)
