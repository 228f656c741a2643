"""Build a bank chunk by chunk, write it as Parquet, read it back, stream it as events.

Layout of a bank folder::

    bank.json            the spec and a summary (counts, base rates, oracle AUC per need)
    customers.parquet    profiles              consents.parquet   consent history
    outcomes.parquet     applications and openings per need
    truth.parquet        true propensity and realised label per customer, snapshot and need
    malformed.parquet    deliberately broken raw events (for the dead-letter path)
    events/YYYY-MM-DD.parquet   the events of each UTC day, one row group per customer chunk
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consent.rules.vocabulary import NEEDS
from training.bank import activity, life, profiles
from training.bank.spec import CHUNK_CUSTOMERS, BankSpec

#: Resolution of the streaming oracle-AUC histograms (bins over the fourth root of p).
AUC_BINS = 1 << 16
TABLES = ("customers", "consents", "outcomes", "truth", "malformed")


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


def _plain(table: pa.Table) -> pa.Table:
    """The table with dictionary columns decoded, as a reader of the Parquet files sees it."""
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _events_table(
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


def _outcomes_table(events: pa.Table) -> pa.Table:
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


def _truth_table(
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
    events = _events_table(spec, index, who, em)
    ids = who.profile["customer_id"].to_numpy()
    return Chunk(
        index=index,
        customers=pa.Table.from_pandas(who.profile, preserve_index=False),
        consents=pa.Table.from_pandas(consent, preserve_index=False),
        events=events,
        outcomes=_outcomes_table(events),
        truth=_truth_table(spec, ids, propensity, clairvoyant, label),
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


# --- summary -------------------------------------------------------------------------------------
class Summary:
    def __init__(self, spec: BankSpec) -> None:
        self.spec = spec
        self.customers = 0
        self.events_by_type: dict[str, int] = {}
        self.malformed = 0
        self.outcomes: dict[str, int] = dict.fromkeys(NEEDS, 0)
        # Oracle-AUC histograms: [which (0: propensity, 1: clairvoyant), need, bin].
        self.positives = np.zeros((2, len(NEEDS), AUC_BINS), np.int64)
        self.negatives = np.zeros((2, len(NEEDS), AUC_BINS), np.int64)
        self.consents: dict[str, int] = {}

    def add(self, chunk: Chunk) -> None:
        self.customers += chunk.customers.num_rows
        for kind, count in _value_counts(chunk.events["type"]).items():
            self.events_by_type[kind] = self.events_by_type.get(kind, 0) + count
        self.malformed += chunk.malformed.num_rows
        applied = chunk.outcomes.filter(pc.equal(chunk.outcomes["type"], "application"))
        for need, count in _value_counts(applied["need"]).items():
            if need in self.outcomes:
                self.outcomes[need] += count
        keys = pc.binary_join_element_wise(
            chunk.consents["purpose"],
            chunk.consents["channel"],
            pc.cast(chunk.consents["granted"], pa.string()),
            ":",
        )
        for key, count in _value_counts(keys).items():
            self.consents[key] = self.consents.get(key, 0) + count
        need = chunk.truth["need"].to_numpy(zero_copy_only=False)
        y = chunk.truth["label"].to_numpy()
        for w, column in enumerate(("propensity", "clairvoyant")):
            p = chunk.truth[column].to_numpy()
            bins = np.minimum((np.power(p, 0.25) * AUC_BINS).astype(np.int64), AUC_BINS - 1)
            for k, name in enumerate(NEEDS):
                mine = need == name
                self.positives[w, k] += np.bincount(bins[mine & (y == 1)], minlength=AUC_BINS)
                self.negatives[w, k] += np.bincount(bins[mine & (y == 0)], minlength=AUC_BINS)

    def as_dict(self) -> dict[str, Any]:
        horizon = self.spec.truth_horizon_days
        base: dict[str, float] = {}
        oracle: dict[str, float] = {}
        clairvoyant: dict[str, float] = {}
        for k, need in enumerate(NEEDS):
            for w, out in ((0, oracle), (1, clairvoyant)):
                pos, neg = self.positives[w, k], self.negatives[w, k]
                below = np.cumsum(neg) - neg
                auc = (pos * (below + 0.5 * neg)).sum() / max(pos.sum() * neg.sum(), 1)
                out[need] = round(float(auc), 4)
            total = pos.sum() + neg.sum()
            rate = pos.sum() / total if total else float("nan")
            base[need] = round(float(1 - (1 - rate) ** (30 / horizon)), 5)
        return {
            "customers": self.customers,
            "events": sum(self.events_by_type.values()),
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "malformed_events": self.malformed,
            "applications_by_need": self.outcomes,
            "monthly_base_rate_by_need": base,
            "oracle_roc_auc_by_need": oracle,
            "clairvoyant_roc_auc_by_need": clairvoyant,
            "consent_entries": dict(sorted(self.consents.items())),
        }


def _value_counts(array: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts = pc.value_counts(array)
    return {
        v.as_py(): c.as_py()
        for v, c in zip(counts.field("values"), counts.field("counts"), strict=True)
        if v.is_valid
    }


# --- writing ------------------------------------------------------------------------------------
class _Writers:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.open: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, table: pa.Table) -> None:
        writer = self.open.get(name)
        if writer is None:
            path = self.out / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self.open[name] = pq.ParquetWriter(
                path, _plain(table).schema, compression="zstd", store_schema=False
            )
        writer.write_table(_plain(table))

    def close(self) -> None:
        for writer in self.open.values():
            writer.close()


def write_chunks(spec: BankSpec, parts: Iterable[Chunk], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    writers = _Writers(out)
    summary = Summary(spec)
    try:
        for chunk in parts:
            for name in TABLES:
                writers.write(name, getattr(chunk, name))
            events = chunk.events
            day = pc.cast(events["occurred_at"], pa.int64()).to_numpy() // 86_400_000_000
            bounds = np.flatnonzero(np.diff(day)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(day)], strict=True):
                date = pd.Timestamp(int(day[lo]) * 86_400, unit="s").strftime("%Y-%m-%d")
                writers.write(f"events/{date}", events.slice(lo, hi - lo))
            summary.add(chunk)
    finally:
        writers.close()
    report = summary.as_dict()
    (out / "bank.json").write_text(
        json.dumps({"spec": spec.as_dict(), "summary": report}, indent=2)
    )
    return report


def write_bank(spec: BankSpec, out: Path, workers: int = 1) -> dict[str, Any]:
    """Generate and write a bank of any size, one chunk of customers at a time."""
    return write_chunks(spec, chunks(spec, workers), out)


# --- contract events ---------------------------------------------------------------------------
def _iso(moment: pd.Timestamp) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def contract_events(events: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of an events table as contract events (``feature_repo.events``)."""
    cols = {name: events[name].to_pylist() for name in events.column_names}
    for i in range(events.num_rows):
        kind = cols["type"][i]
        if kind == "transaction":
            payload: dict[str, Any] = {
                "amount": f"{cols['amount'][i]:.2f}",
                "currency": cols["currency"][i],
                "direction": cols["direction"][i],
                "category": cols["category"][i],
            }
        elif kind == "page_view":
            payload = {"page": cols["page"][i], "seconds": round(cols["seconds"][i], 1)}
        elif kind == "login":
            payload = {"method": "password"}
        elif kind == "application":
            payload = {"product": cols["product"][i], "status": cols["status"][i]}
        elif kind in ("product_opened", "product_closed"):
            payload = {"product": cols["product"][i]}
        elif kind == "contact":
            payload = {"reason": cols["reason"][i], "channel": cols["contact_channel"][i]}
        else:
            payload = {"changed": [cols["changed"][i]]}
        yield {
            "event_id": cols["event_id"][i],
            "customer_id": cols["customer_id"][i],
            "type": kind,
            "occurred_at": _iso(cols["occurred_at"][i]),
            "channel": cols["channel"][i],
            "schema_version": 1,
            "payload": payload,
        }


TimedRecord = tuple[int, str | None, bytes]


def records(events: pa.Table, malformed: pa.Table) -> Iterator[TimedRecord]:
    """(event time in µs, key, value) in event-time order, malformed ones at their times."""
    good = contract_events(events)
    times = pc.cast(events["occurred_at"], pa.int64()).to_pylist()
    bad = list(
        zip(
            pc.cast(malformed["occurred_at"], pa.int64()).to_pylist(),
            malformed["customer_id"].to_pylist(),
            malformed["raw"].to_pylist(),
            strict=True,
        )
    )
    j = 0
    for i, event in enumerate(good):
        while j < len(bad) and bad[j][0] <= times[i]:
            yield bad[j]
            j += 1
        yield times[i], event["customer_id"], json.dumps(event, separators=(",", ":")).encode()
    yield from bad[j:]


def stream_folder(folder: Path) -> Iterator[TimedRecord]:
    """A written bank's events, day by day in event-time order, malformed ones included."""
    malformed = pq.read_table(folder / "malformed.parquet")
    malformed_day = pc.cast(malformed["occurred_at"], pa.int64()).to_numpy() // 86_400_000_000
    for path in sorted((folder / "events").glob("*.parquet")):
        day = pd.Timestamp(path.stem).value // 86_400_000_000_000
        events = pq.read_table(path).sort_by("occurred_at")
        mine = malformed.filter(pa.array(malformed_day == day)).sort_by("occurred_at")
        yield from records(events, mine)


# --- in memory ---------------------------------------------------------------------------------
def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else pa.table({})


@dataclass
class Bank:
    """A bank held in memory (for tests and the demo): Arrow tables, pandas on demand."""

    spec: BankSpec
    tables: dict[str, pa.Table]
    summary: dict[str, Any]
    _chunks: list[Chunk] | None = None

    @property
    def customers(self) -> pd.DataFrame:
        return self.tables["customers"].to_pandas()

    @property
    def consents(self) -> pd.DataFrame:
        return self.tables["consents"].to_pandas()

    @property
    def events(self) -> pd.DataFrame:
        return self.tables["events"].to_pandas()

    @property
    def outcomes(self) -> pd.DataFrame:
        return self.tables["outcomes"].to_pandas()

    @property
    def truth(self) -> pd.DataFrame:
        return self.tables["truth"].to_pandas()

    def granted(self, purpose: str, channel: str) -> set[str]:
        """Customers whose latest consent entry for (purpose, channel) is a grant."""
        consents = self.consents.sort_values("recorded_at", kind="stable")
        latest = consents.groupby(["customer_id", "purpose", "channel"]).tail(1)
        chosen = latest[(latest["purpose"] == purpose) & (latest["channel"] == channel)]
        return set(chosen[chosen["granted"]]["customer_id"])

    def event_dicts(self) -> list[dict[str, Any]]:
        return list(contract_events(self.tables["events"]))

    def records(self) -> Iterator[TimedRecord]:
        return records(self.tables["events"], self.tables["malformed"])

    def write(self, out: Path) -> dict[str, Any]:
        if self._chunks is None:
            raise ValueError("only a generated bank can be written; this one was read")
        return write_chunks(self.spec, self._chunks, out)

    @classmethod
    def read(cls, folder: Path) -> Bank:
        meta = json.loads((folder / "bank.json").read_text())
        tables = {name: pq.read_table(folder / f"{name}.parquet") for name in TABLES}
        days = sorted((folder / "events").glob("*.parquet"))
        tables["events"] = _concat([pq.read_table(p) for p in days]).sort_by("occurred_at")
        return cls(BankSpec.from_dict(meta["spec"]), tables, meta["summary"])


def generate(spec: BankSpec, workers: int = 1) -> Bank:
    """A whole bank in memory; its events in event-time order."""
    parts = list(chunks(spec, workers))
    summary = Summary(spec)
    for part in parts:
        summary.add(part)
    tables = {name: _plain(_concat([getattr(p, name) for p in parts])) for name in TABLES}
    tables["events"] = _plain(_concat([p.events for p in parts])).sort_by("occurred_at")
    tables["malformed"] = tables["malformed"].sort_by("occurred_at")
    return Bank(spec, tables, summary.as_dict(), parts)
