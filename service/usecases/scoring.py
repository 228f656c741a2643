"""Batch scoring for outbound campaigns: every customer the gate lets be scored, every served need.

Who is in the list:

- profiling consent granted both as of the scoring time and now: a customer who objected after
  the scoring time is not scored for a list made today;
- allowed by the gate's customer-level rules (``CUSTOMER_RULES``: do-not-contact, vulnerable,
  KYC, AML), judged as for a sales action on the customer directory's facts; a customer missing
  from the directory is left out (unknown facts take the safe side).

Those left out are counted by reason, never named. Features come from the offline store through
a Feast point-in-time join at the scoring time, with serving's freshness rule applied at that
time (a feature older than its allowed age is missing), so the list holds the score the API
would have given then. Models are the served ones (the registry alias, above the quality floor).

Every run appends one operation record to the audit log: the counts, model versions, policy
version, the as-of time and the output file's SHA-256, and no customer. The file is written
beside its destination and moved into place only once that record is committed; if consent,
the directory or the audit log cannot be read or written, no file is left behind.

The output is a scored list, not a delivery list: consent for the channel, suitability and
contact rules are still checked by the gate when an action is delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from consent.rules.record import OperationRecord
from consent.rules.subject import Subject
from consent.rules.vocabulary import ANY_CHANNEL
from feature_repo.activity import VALID_UNTIL
from feature_repo.definitions import ACTIVITY_VIEW, MAX_AGE, VIEW_OF
from service import __version__
from service.adapters.features.online_features import DEFAULT_LAG
from service.adapters.models import NeedModel
from service.bootstrap import Container
from training.trainset import historical_features

log = logging.getLogger(__name__)

#: The operation's name in its audit record.
OPERATION = "batch_score"


class ScoringRefused(ValueError):
    """Nothing was written: the run could not check what it must, or has nothing to score."""


def score_matrix(models: Mapping[str, NeedModel], frame: pd.DataFrame) -> pd.DataFrame:
    """``score_<need>`` per row of ``frame`` (which holds every model's features)."""
    out = {}
    for need, model in sorted(models.items()):
        matrix = frame[list(model.features)].to_numpy(dtype=np.float64)
        out[f"score_{need}"] = model.predict(matrix)
    return pd.DataFrame(out, index=frame.index)


@dataclass
class Eligible:
    """The customers a run scores, and how many were left out for which reason."""

    customers: list[str]
    #: Customers with profiling consent at the scoring time: the list, and those left out.
    profiled_at_as_of: int = 0
    #: Of those, no longer consenting now; missing from the customer directory; stopped by a
    #: customer rule (one customer may be stopped by several: ``by_reason_code`` counts each).
    withdrawn_since: int = 0
    unknown: int = 0
    by_rules: int = 0
    by_reason_code: Counter[str] = field(default_factory=Counter)

    def left_out(self) -> dict[str, Any]:
        return {
            "profiling_withdrawn_since_as_of": self.withdrawn_since,
            "customer_unknown": self.unknown,
            "customer_rules": self.by_rules,
            "by_reason_code": dict(sorted(self.by_reason_code.items())),
        }


def eligible(container: Container, at: datetime, now: datetime) -> Eligible:
    """Customers with profiling consent at ``at`` and at ``now`` whom the customer-level rules
    allow. Raises what the stores raise: the caller writes nothing then."""
    registry = container.registry
    then = registry.granted_at("profiling", ANY_CHANNEL, at)
    still = registry.granted_at("profiling", ANY_CHANNEL, now)
    # Their consents went with the erasure; the register also covers history written back since.
    erased = container.erasures.current().among(then & still)
    profiled = sorted((then & still) - erased)
    known = container.directory.get_many(profiled)
    result = Eligible([], len(then), len(then - still), len(profiled) - len(known))
    rules = container.policy.customer_rules
    # Judged as for a sales action, which all of them judge: a campaign's list is for selling.
    action = next(a for a in container.catalog.actions.values() if a.kind == "sales")
    for customer_id in profiled:
        entry = known.get(customer_id)
        if entry is None:
            continue
        subject = Subject(
            action, action.channels[0], None, {}, now, facts=entry.facts, customer_id=customer_id
        )
        failed = [o.reason_code for rule in rules if (o := rule.evaluate(subject)).reason_code]
        if failed:
            result.by_rules += 1
            result.by_reason_code.update(failed)
        else:
            result.customers.append(customer_id)
    return result


def activity_rows_at(container: Container, customers: Sequence[str], at: datetime) -> pd.DataFrame:
    """Each customer's activity row at ``at`` (the latest at or before it, the row a
    point-in-time join takes): its time (``event_timestamp``, NaT without one) and until when it
    holds (``valid_until``, NaN where the row does not say)."""
    folder = container.store_location.offline_dir / ACTIVITY_VIEW
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    index = pd.Index(customers, name="customer_id")
    empty = pd.DataFrame(
        {
            "event_timestamp": pd.Series(pd.NaT, index=index, dtype="datetime64[us, UTC]"),
            VALID_UNTIL: np.nan,
        },
        index=index,
    )
    if not files:
        return empty
    stamp = pa.scalar(pd.Timestamp(at).as_unit("us"), pa.timestamp("us", tz="UTC"))
    # Parts written before rows said until when they hold have no such column: null there.
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            (VALID_UNTIL, pa.float64()),
        ]
    )
    table = ds.dataset(files, format="parquet", schema=schema).to_table(
        filter=ds.field("event_timestamp") <= stamp
    )
    rows = table.to_pandas().sort_values(["customer_id", "event_timestamp"], kind="stable")
    latest = rows.groupby("customer_id").tail(1).set_index("customer_id")
    latest["event_timestamp"] = pd.to_datetime(latest["event_timestamp"], utc=True)
    return latest[["event_timestamp", VALID_UNTIL]].reindex(index)


def fresh_at(
    frame: pd.DataFrame,
    rows: pd.DataFrame,
    at: datetime,
    lag: timedelta = DEFAULT_LAG,
    watermark: datetime | None = None,
) -> pd.DataFrame:
    """``frame`` with the activity features that serving would call stale at ``at`` set
    missing (``OnlineFeatures.fresh``): a row that says until when it holds is stale once that,
    or the stream's ``watermark`` (the offline rows are as complete as the stream), is more
    than ``lag`` before ``at``; a row that does not say, feature by feature by its age
    (``MAX_AGE``)."""
    mine = rows.reindex(frame["customer_id"])
    # No row: NaN, never stale (nothing to serve).
    seconds = (pd.Timestamp(at) - mine["event_timestamp"]).dt.total_seconds().to_numpy()
    valid = mine[VALID_UNTIL].to_numpy(dtype=np.float64)
    says = ~np.isnan(valid)
    if watermark is not None:
        valid = np.minimum(valid, watermark.timestamp())
    overdue = says & (valid + lag.total_seconds() < pd.Timestamp(at).timestamp())
    out = frame.copy()
    for name, limit in MAX_AGE.items():
        if limit is None or VIEW_OF[name] != ACTIVITY_VIEW or name not in out.columns:
            continue
        stale = np.where(says, overdue, seconds > limit.total_seconds())
        if stale.any():
            out[name] = out[name].to_numpy(dtype=np.float64)
            out.loc[stale, name] = np.nan
    return out


def features_at(
    container: Container, at: datetime, customers: Sequence[str] | None = None
) -> pd.DataFrame:
    """The scoring features as of ``at`` (point-in-time, through Feast, fresh as serving has
    them) of ``customers`` (default: every eligible customer now)."""
    if customers is None:
        customers = eligible(container, at, datetime.now(UTC)).customers
    entity = pd.DataFrame({"customer_id": list(customers), "event_timestamp": pd.Timestamp(at)})
    frame = historical_features(container.feature_store, entity)
    frame = frame.sort_values("customer_id", ignore_index=True)
    rows = activity_rows_at(container, list(customers), at)
    lag = timedelta(minutes=container.settings.allowed_feature_lag_minutes)
    pipeline = container.features.pipeline
    watermark = None if pipeline is None else pipeline.current()
    return fresh_at(frame, rows, at, lag, watermark)


def _write(result: pd.DataFrame, path: Path, metadata: dict[bytes, bytes], csv: bool) -> str:
    """Write the list to ``path``; its SHA-256."""
    if csv:
        result.to_csv(path, index=False)
    else:
        table = pa.Table.from_pandas(result, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        pq.write_table(table, path)
    digest = hashlib.sha256()
    with path.open("rb") as written:
        for block in iter(lambda: written.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def batch_score(container: Container, out: Path, at: datetime) -> dict[str, Any]:
    """Score the eligible customers as of ``at`` into ``out`` (.parquet, or .csv), log the run;
    what the run did, as its audit record says it."""
    if at.utcoffset() is None:
        raise ScoringRefused("the scoring time must carry its time zone")
    now = datetime.now(UTC)
    if at > now:
        raise ScoringRefused(f"cannot score as of {at.isoformat()}: it is in the future")
    models = container.models.snapshot()
    if not models:
        unchecked = container.models.unchecked()
        if unchecked:  # the operational store is unreachable: consent cannot be read either
            raise ScoringRefused(
                "no model's promotion could be checked in the audit log "
                f"({'; '.join(f'{n} {why}' for n, why in sorted(unchecked.items()))}); "
                "nothing was written"
            )
        raise ScoringRefused("no models to score with: train first (nextbest train)")
    try:
        chosen = eligible(container, at, now)
    except Exception as error:  # consent or the directory unreadable: nobody may be scored
        log.error("batch scoring: consent or customer facts could not be read: %s", error)
        raise ScoringRefused(
            "consent or the customer directory could not be read; nothing was written"
        ) from error
    frame = features_at(container, at, chosen.customers)
    result = pd.concat([frame[["customer_id"]], score_matrix(models, frame)], axis=1)
    versions = {need: f"{m.name}/{m.version}" for need, m in sorted(models.items())}
    policy = container.policy
    details: dict[str, Any] = {
        "as_of": at.astimezone(UTC).isoformat(),
        "customers_scored": len(result),
        "profiled_at_as_of": chosen.profiled_at_as_of,
        "left_out": chosen.left_out(),
        "models": {
            need: {"name": m.name, "version": m.version, "run_id": m.run_id}
            for need, m in sorted(models.items())
        },
        "needs_without_model": sorted(set(container.models.needs) - set(models)),
        "policy_version": policy.version,
        "customer_rules": {r.id: r.version for r in policy.customer_rules},
        "format": "csv" if out.suffix == ".csv" else "parquet",
    }
    metadata = {
        b"nextbest.models": json.dumps(versions).encode(),
        b"nextbest.as_of": at.isoformat().encode(),
        b"nextbest.policy_version": policy.version.encode(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        details["output_sha256"] = _write(result, partial, metadata, out.suffix == ".csv")
        record = OperationRecord(
            operation_id=f"{OPERATION}-{uuid.uuid4()}",
            operation=OPERATION,
            performed_at=now,
            code_version=__version__,
            details=details,
        )
        appended = container.audit.append_operation(record)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {
        **details,
        "customers": len(result),
        "models": versions,
        "out": str(out),
        "audit": {"operation_id": record.operation_id, "record_hash": appended.record_hash},
    }
