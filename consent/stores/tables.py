"""The operational store's tables (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
)

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored as UTC on every backend and read back as an aware UTC datetime.

    SQLite keeps a datetime as its wall-clock text and drops the offset, so a ``+14:00`` time
    stored as given would read back fourteen hours late; PostgreSQL hands ``timestamptz`` back
    in the session's zone. Converting on the way in and out makes both the same. A naive
    datetime is refused: which zone it meant is unknown, and guessing is how times shift."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"the operational store takes aware datetimes only, not {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite's text has no offset: it was written as UTC above.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


consent_history = Table(
    "consent_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("customer_id", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    # When the bank recorded the entry (the registry's clock as it accepted it): what orders
    # the history, so a withdrawal always wins over a grant recorded before it, whatever time a
    # device claims.
    Column("recorded_at", UtcDateTime(), nullable=False),
    # When the customer gave it (an event's occurred_at, the API body's time): evidence only.
    # Unknown (NULL) for entries written before it was kept: read as recorded_at.
    Column("given_at", UtcDateTime(), nullable=True),
    Column("source", String(64), nullable=False),
    Column("notice_version", String(32), nullable=False),
    # Who recorded it: ``<role>:<API key name>``, or the stream or the loader.
    Column("recorded_by", String(80), nullable=True),
    # The stream event it came from: a redelivery or a replay records it only once.
    Column("event_id", String(128), nullable=True, unique=True),
    Index("ix_consent_customer", "customer_id", "purpose", "channel", "id"),
)

customers = Table(
    # What the gate needs to know about a customer besides consent (the bank's customer master
    # is the source; `nextbest load` and profile updates write it).
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("household_id", String(64), nullable=True, index=True),
    Column("rm_id", String(64), nullable=True, index=True),
    Column("facts", Text, nullable=False),  # CustomerFacts as JSON
    Column("updated_at", UtcDateTime(), nullable=False),
)

contact_history = Table(
    # Impressions, accepts, declines and dismissals from feedback, and contacts made: they
    # drive contact caps, cool-offs and "already declined" across channels and the household.
    "contact_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("customer_id", String(64), nullable=False),
    Column("household_id", String(64), nullable=True),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("action_id", String(64), nullable=True),
    Column("need", String(16), nullable=True),
    Column("decision_id", String(64), nullable=True),
    # Who reported it (feedback: ``<role>:<API key name>``); None for the bank's own contacts.
    Column("recorded_by", String(80), nullable=True),
    Index("ix_contact_customer", "customer_id", "occurred_at"),
    Index("ix_contact_household", "household_id", "occurred_at"),
)

outcome_events = Table(
    # What customers did that a recommendation may have caused or provoked: applications and
    # product openings (conversions), complaints and marketing opt-outs (harm), from the event
    # stream. ``nextbest report lift`` attributes them to decisions; erased with the customer.
    "outcome_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    # ``application``, ``product_opened``, ``complaint`` or ``opt_out``.
    Column("kind", String(16), nullable=False),
    Column("need", String(16), nullable=True),
    Column("channel", String(16), nullable=True),
    Index("ix_outcome_customer", "customer_id", "occurred_at"),
    Index("ix_outcome_time", "occurred_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # The sequence number is assigned by the writer, and both it and prev_hash are unique: two
    # writers racing for the same head cannot both succeed, so the chain never forks. Writers
    # also serialise on a lock (consent/stores/audit/writes.py); the constraints are the last line
    # of defence.
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("recorded_at", UtcDateTime(), nullable=False),
    # A pseudonym ("cref:...") from the customer's key in customer_keys, never the customer id.
    Column("customer_ref", String(128), nullable=False),
    Column("prev_hash", String(80), nullable=False, unique=True),
    Column("record_hash", String(80), nullable=False),
    Column("body", Text, nullable=False),
    # The record's leaf in the log's Merkle tree (``record_leaf_hash``), kept so the tree is
    # rebuilt from 32 bytes a record rather than every body. Empty in rows written before it
    # existed: those leaves are computed from the row. Never trusted on its own: verification
    # computes every leaf from the record and holds it to the published checkpoints.
    Column("leaf_hash", LargeBinary(32), nullable=True),
    # A customer's export pages through their records in seq order; a time range by recorded_at.
    Index("ix_audit_customer", "customer_ref", "seq"),
    Index("ix_audit_recorded_at", "recorded_at"),
)

# Decision records are tens of kilobytes of repetitive JSON: PostgreSQL compresses them with
# lz4 much faster than with its default (pglz), to about the same size, which is what lets
# the audit writer keep up. A server without lz4 (or before 14) keeps its default.
event.listen(
    audit_log,
    "after_create",
    # Compressed, a record fits in the row itself (STORAGE MAIN): stored out of line it cost
    # an insert into the TOAST table and its index as well.
    DDL("ALTER TABLE audit_log ALTER COLUMN body SET STORAGE MAIN").execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)
event.listen(
    audit_log,
    "after_create",
    DDL(  # type: ignore[no-untyped-call]
        "DO $$ BEGIN EXECUTE 'ALTER TABLE audit_log ALTER COLUMN body SET COMPRESSION lz4'; "
        "EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'audit_log.body keeps the default compression'; "
        "END $$"
    ).execute_if(dialect="postgresql"),
)

customer_keys = Table(
    # One random key per customer: the audit log names a customer only by an HMAC of their id
    # under this key. Deleting the key (right to erasure) leaves the chain intact and its records
    # tied to nobody; a customer who comes back gets a new key.
    "customer_keys",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("key", LargeBinary(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

audit_checkpoints = Table(
    # Heads of the chain as they were: truncating the tail of the log cannot be seen in the chain
    # itself, only against a head kept from before (here, and exported to outside parties).
    "audit_checkpoints",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("head_hash", String(80), nullable=False),
    Column("records", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("taken_at", UtcDateTime(), nullable=False),
)


erasure_register = Table(
    # Customers who were erased (right to erasure), so that no load, backfill, replay or
    # training brings them back. Named only by a keyed hash (consent/stores/erasure.py), never by
    # id.
    "erasure_register",
    metadata,
    Column("ref", String(80), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

erasure_register_key = Table(
    # The register's one key (row id 1), made on first use.
    "erasure_register_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


alerts = Table(
    # Relationship-manager alerts (service/usecases/alerter.py): raised by the stream after the gate
    # passed them and their decision was logged; an RM works them off in the inbox.
    "alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("decision_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("household_id", String(64), nullable=True),
    Column("rm_id", String(64), nullable=False),
    # What one open alert per customer is kept to: the need, or a service action's id.
    Column("topic", String(64), nullable=False),
    Column("need", String(16), nullable=True),
    Column("action_id", String(64), nullable=False),
    Column("score", Float, nullable=True),
    Column("priority", Float, nullable=False),
    Column("status", String(16), nullable=False),  # queued | open | closed | expired
    Column("created_at", UtcDateTime(), nullable=False),
    Column("opened_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("body", Text, nullable=False),  # the rest as JSON: reasons, talking points, triggers
    Column("disposition", String(32), nullable=True),
    Column("disposition_note", Text, nullable=True),
    Column("disposed_at", UtcDateTime(), nullable=True),
    Column("disposed_by", String(64), nullable=True),
    Index("ix_alerts_rm", "rm_id", "status", "created_at"),
    Index("ix_alerts_customer", "customer_id", "topic", "created_at"),
    Index("ix_alerts_household", "household_id", "topic", "created_at"),
)
