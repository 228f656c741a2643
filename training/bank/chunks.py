"""Build a bank one chunk of customers at a time, as Arrow tables: who they are, their consents,
their lives (situations, applications, ground truth) and the events those lives emit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consent.rules.vocabulary import NEEDS
from training.bank import activity, life, profiles
from training.bank.contract import contract_events
from training.bank.spec import CHUNK_CUSTOMERS, BankSpec


@dataclass
class Chunk:
    index: int
    customers: pa.Table
    consents: pa.Table
    events: pa.Table
    outcomes: pa.Table
    truth: pa.Table
    malformed: pa.Table


@cache
def _offsets(start: datetime, days: int) -> np.ndarray:
    return profiles.day_offsets(start, days)


def _codes(indices: np.ndarray, dictionary: tuple[str, ...]) -> pa.Array:
    # Dictionary-encoded in memory (a byte per value); Parquet stores it as plain strings.
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, mask=indices < 0, type=pa.int8()), pa.array(dictionary)
    )


def events_table(
    spec: BankSpec, index: int, who: profiles.People, em: activity.Emitter
) -> pa.Table:
    cols = em.cols
    customer = np.concatenate(cols.customer)
    ts = np.concatenate(cols.ts)
    codes = {k: np.concatenate(v) for k, v in cols.codes.items()}
    order = np.lexsort((codes["type"], customer, ts))
    customer, ts = customer[order], ts[order]
    codes = {k: v[order] for k, v in codes.items()}
    amount = np.concatenate(cols.amount)[order]
    seconds = np.concatenate(cols.seconds)[order]
    count = len(ts)
    ids = pc.binary_join_element_wise(
        f"E{spec.seed}-{index}-", pc.cast(pa.array(np.arange(count)), pa.string()), ""
    )
    is_txn = codes["type"] == activity.T["transaction"]
    return pa.table(
        {
            "event_id": ids,
            "customer_id": pa.DictionaryArray.from_arrays(
                pa.array(customer), pa.array(who.profile["customer_id"].to_numpy())
            ),
            "type": _codes(codes["type"], activity.EVENT_TYPES),
            "occurred_at": pa.array(ts * 1_000_000, type=pa.timestamp("us", tz="UTC")),
            "channel": _codes(codes["channel"], activity.CHANNELS),
            "amount": pa.array(amount, mask=np.isnan(amount)),
            "currency": _codes(np.where(is_txn, 0, -1).astype(np.int8), ("CNY",)),
            **{
                name: _codes(codes[name], activity.CODE_COLUMNS[name])
                for name in ("direction", "category", "page")
            },
            "seconds": pa.array(seconds, mask=np.isnan(seconds)),
            **{
                name: _codes(codes[name], activity.CODE_COLUMNS[name])
                for name in ("product", "status", "reason", "contact_channel", "changed")
            },
        }
    )


def outcomes_table(events: pa.Table) -> pa.Table:
    kind = events["type"]
    applied = pc.and_(pc.equal(kind, "application"), pc.equal(events["status"], "submitted"))
    opened = pc.equal(kind, "product_opened")
    chosen = events.filter(pc.or_(applied, opened))
    return pa.table(
        {
            "customer_id": chosen["customer_id"],
            "need": chosen["product"],
            "type": chosen["type"],
            "occurred_at": chosen["occurred_at"],
            "event_id": chosen["event_id"],
        }
    )


def truth_table(
    spec: BankSpec,
    ids: np.ndarray,
    propensity: np.ndarray,
    clairvoyant: np.ndarray,
    label: np.ndarray,
) -> pa.Table:
    n, needs, snaps = propensity.shape
    snap_days = life.snapshot_days(spec)
    start_us = int(spec.start.timestamp()) * 1_000_000
    moments = start_us + snap_days.astype(np.int64) * 86_400_000_000
    # Row order: customer, snapshot, need.
    return pa.table(
        {
            "customer_id": np.repeat(ids, snaps * needs),
            "snapshot_at": pa.array(
                np.tile(np.repeat(moments, needs), n), type=pa.timestamp("us", tz="UTC")
            ),
            "horizon_days": pa.array(
                np.full(n * snaps * needs, spec.truth_horizon_days), pa.int16()
            ),
            "need": np.tile(np.array(NEEDS), n * snaps),
            "propensity": propensity.transpose(0, 2, 1).ravel().astype(np.float32),
            "clairvoyant": clairvoyant.transpose(0, 2, 1).ravel().astype(np.float32),
            "label": label.transpose(0, 2, 1).ravel(),
        }
    )


DEFECTS = ("truncated", "missing_customer_id", "unknown_type", "bad_timestamp", "not_json")


def _malformed(rng: np.random.Generator, spec: BankSpec, events: pa.Table) -> pa.Table:
    schema = pa.schema(
        [
            ("occurred_at", pa.timestamp("us", tz="UTC")),
            ("customer_id", pa.string()),
            ("defect", pa.string()),
            ("raw", pa.binary()),
        ]
    )
    count = round(spec.malformed_fraction * events.num_rows)
    if count == 0:
        return schema.empty_table()
    picks = np.sort(rng.choice(events.num_rows, size=count, replace=False))
    sample = events.take(pa.array(picks))
    rows = []
    for i, event in enumerate(contract_events(sample)):
        defect = DEFECTS[i % len(DEFECTS)]
        broken = dict(event)
        if defect == "missing_customer_id":
            broken.pop("customer_id")
        elif defect == "unknown_type":
            broken["type"] = "teleport"
        elif defect == "bad_timestamp":
            broken["occurred_at"] = "yesterday afternoon"
        raw = json.dumps(broken).encode()
        if defect == "truncated":
            raw = raw[: len(raw) // 2]
        elif defect == "not_json":
            raw = b"\x00\x01 not an event"
        rows.append((event["customer_id"], defect, raw))
    return pa.table(
        {
            "occurred_at": sample["occurred_at"],
            "customer_id": [r[0] for r in rows],
            "defect": [r[1] for r in rows],
            "raw": pa.array([r[2] for r in rows], pa.binary()),
        },
        schema=schema,
    )


def build_chunk(spec: BankSpec, index: int) -> Chunk:
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index]))
    first = index * CHUNK_CUSTOMERS
    n = min(CHUNK_CUSTOMERS, spec.customers - first)
    who = profiles.people(rng, spec, first, n)
    consent = profiles.consents(rng, spec, who)
    situations = life.situations(rng, spec, who)
    hazard = life.hazards(spec, who, situations)
    outcomes = life.applications(rng, spec, hazard)
    propensity, clairvoyant, label = life.truth(spec, who, situations, hazard, outcomes)
    del hazard
    em = activity.Emitter(rng, spec, who, _offsets(spec.start, spec.days))
    activity.everyday(em)
    activity.situational(em, life.resolved(spec, situations, outcomes))
    activity.outcome_events(em, outcomes)
    events = events_table(spec, index, who, em)
    ids = who.profile["customer_id"].to_numpy()
    return Chunk(
        index=index,
        customers=pa.Table.from_pandas(who.profile, preserve_index=False),
        consents=pa.Table.from_pandas(consent, preserve_index=False),
        events=events,
        outcomes=outcomes_table(events),
        truth=truth_table(spec, ids, propensity, clairvoyant, label),
        malformed=_malformed(rng, spec, events),
    )


def _build(args: tuple[BankSpec, int]) -> Chunk:
    return build_chunk(*args)


def chunks(spec: BankSpec, workers: int = 1) -> Iterator[Chunk]:
    """Every chunk in order; with ``workers`` > 1 they are built in parallel processes."""
    jobs = [(spec, i) for i in range(spec.chunks)]
    if workers <= 1 or len(jobs) == 1:
        yield from map(_build, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        # At most ``workers`` chunks ahead of the writer, so memory stays bounded.
        pending = [pool.submit(_build, job) for job in jobs[:workers]]
        following = workers
        while pending:
            chunk = pending.pop(0).result()
            if following < len(jobs):
                pending.append(pool.submit(_build, jobs[following]))
                following += 1
            yield chunk
