"""What ``bench.report`` shows of each kind of benchmark result: a table's columns, each read
from the result's JSON, with what the benchmark measures and what it is compared with."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MISSING = "—"

#: One cell of a row: what it shows, read from one result (a benchmark's JSON document).
Cell = Callable[[Mapping[str, Any]], str]


def at(path: str, unit: str = "", digits: int | None = None) -> Cell:
    """The value at a dotted ``path`` (``load.server_ms.p50``; ``runs.0.seconds`` indexes a
    list), with thousands separators, ``digits`` decimals if given, and ``unit`` after it;
    ``MISSING`` where a result lacks it."""

    def cell(result: Mapping[str, Any]) -> str:
        value: Any = result
        for key in path.split("."):
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, Mapping) and value.get(key) is not None:
                value = value[key]
            else:
                return MISSING
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, int | float) and digits is not None:
            text = f"{value:,.{digits}f}"
        elif isinstance(value, int | float):
            text = f"{value:,}"
        else:
            text = str(value)
        return f"{text}{unit}"

    return cell


def ratio(path: str) -> Cell:
    """A ratio the benchmark computed (naive over ours, in the same run)."""
    return at(path, "×", 1)


def oracle_ratios(result: Mapping[str, Any]) -> str:
    """The lowest and highest need model's test ROC AUC over the oracle's."""
    ratios = [
        float(v["oracle_ratio"])
        for v in (result.get("test") or {}).values()
        if isinstance(v, Mapping) and v.get("oracle_ratio") is not None
    ]
    return f"{min(ratios):.3f}–{max(ratios):.3f}" if ratios else MISSING


def lift_coverage(result: Mapping[str, Any]) -> str:
    """Of the actions with volume, how many had the world's truth inside their interval."""
    actions = [a for a in (result.get("lift") or {}).get("actions", []) if a.get("measured")]
    if not actions:
        return MISSING
    return f"{sum(bool(a.get('covered')) for a in actions)} of {len(actions)}"


def joined(*cells: Cell, sep: str = " / ") -> Cell:
    return lambda result: sep.join(cell(result) for cell in cells)


@dataclass(frozen=True)
class Kind:
    """How to report one kind of benchmark (its JSON's ``benchmark`` field)."""

    title: str
    module: str
    measures: str
    naive: str
    columns: Sequence[tuple[str, Cell]]
    #: The rows one result gives (most give one; ``decide_floor`` one per step).
    rows: Callable[[Mapping[str, Any]], list[Mapping[str, Any]]] = field(
        default=lambda result: [result]
    )


def _floor_steps(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [{"step": name, **step} for name, step in result.get("steps", {}).items()]


KINDS: dict[str, Kind] = {
    "generate": Kind(
        title="Generating the synthetic bank",
        module="bench.generate",
        measures="`write_bank` (vectorised, chunked, in parallel processes) writing a bank's "
        "events as Parquet; peak memory over the process tree.",
        naive="a per-customer, per-day Python loop building event dictionaries, written with "
        "pandas, on a slice of customers in the same run.",
        columns=[
            ("bank", joined(at("customers"), at("days", " days"), sep=" customers × ")),
            ("events", at("events")),
            ("seconds (median)", at("seconds_median")),
            ("events/s", at("events_per_second")),
            ("naive events/s", at("naive.events_per_second")),
            ("ours ÷ naive", ratio("speedup_vs_naive")),
            ("peak memory", at("peak_memory_mb_process_tree", " MB")),
            ("on disk", at("disk_mb", " MB")),
        ],
    ),
    "stream": Kind(
        title="The stream worker",
        module="bench.stream",
        measures="one worker process from Kafka into the online store (events/s, median of "
        "runs), and freshness at a steady rate: from producing an event to its customer's "
        "features being readable through the Feast SDK. From the `-s6-` runs on, freshness "
        "runs the worker as a process of its own (`nextbest stream`) and one reader polls "
        "every probe not yet seen; earlier runs ran the worker as a thread beside a polling "
        "thread per probe, which competed with it for the interpreter. From the `-s7-` runs "
        "on, the events are dated when they are sent, as on a live stream; before, the bank's "
        "month-old history was replayed among probes dated now, which (with timers) made the "
        "worker step every customer through a month of midnights: that case is reported as "
        "replay freshness.",
        naive="one `FeatureStore.push` per event, on the same records.",
        columns=[
            ("events", at("events_in_topic")),
            ("Redis events/s", at("redis.events_per_second_median")),
            ("SQLite events/s", at("sqlite.runs.0.events_per_second", digits=0)),
            ("naive events/s", at("naive_push_per_event.events_per_second")),
            ("ours ÷ naive", ratio("speedup_vs_naive")),
            ("freshness at", at("freshness.achieved_rate", " events/s")),
            ("freshness p50", at("freshness.p50_seconds", " s")),
            ("freshness p99", at("freshness.p99_seconds", " s")),
            ("replay freshness p50", at("freshness_replaying_history.p50_seconds", " s")),
            ("replay freshness p99", at("freshness_replaying_history.p99_seconds", " s")),
            ("timers of", at("timers.customers")),
            ("timers: share of a core", at("timers.steady_state.share_of_a_core")),
        ],
    ),
    "stale": Kind(
        title="Stale features on the demo bank",
        module="bench.stale",
        measures="the share of 400 decisions (customers drawn with a fixed seed, on the app) "
        "that carry `FEATURES_STALE`, and that deliver anything, on the demo bank right after "
        "its set-up.",
        naive="the same measurement on the commit before timers, where a row's features were "
        "judged by their age (run `-before`).",
        columns=[
            ("decisions", at("decisions")),
            ("FEATURES_STALE", at("features_stale")),
            ("share stale", at("features_stale_share")),
            ("share delivering", at("delivered_anything_share")),
        ],
    ),
    "train": Kind(
        title="Training the seven need models",
        module="bench.train",
        measures="the point-in-time training set through Feast (DuckDB), fitting, calibrating "
        "and evaluating the seven needs on features binned once, and registering in MLflow.",
        naive="per need its own point-in-time join and binning, then the same fits (same "
        "AUCs); compared on join + fits.",
        columns=[
            ("rows", at("rows")),
            ("features", at("features")),
            ("join", at("training_set_seconds", " s")),
            ("fits", at("train_seconds", " s")),
            ("register", at("register_seconds", " s")),
            ("join + fits + register", at("total_seconds_join_train_register", " s")),
            ("naive", at("naive_seconds", " s")),
            ("naive ÷ ours", ratio("speedup_vs_naive")),
            ("peak memory", at("peak_memory_mb", " MB")),
            ("oracle ratio (min–max)", oracle_ratios),
        ],
    ),
    "score": Kind(
        title="Batch scoring",
        module="bench.score",
        measures="one vectorised `predict` per need over every profiled customer (median of "
        "repeats), and `nextbest score` end to end (consents, join, scoring, Parquet).",
        naive="a loop over customers, one `predict` per customer and need.",
        columns=[
            ("customers", at("customers")),
            ("scoring (median)", at("score_seconds_median", " s")),
            ("customers/s", at("customers_per_second")),
            ("naive customers/s", at("naive_customers_per_second")),
            ("ours ÷ naive", ratio("speedup_vs_naive")),
            ("`nextbest score`", at("nextbest_score_seconds", " s")),
            ("peak memory", at("peak_memory_mb", " MB")),
        ],
    ),
    "audit": Kind(
        title="The audit log's writer",
        module="bench.audit",
        measures="appends of realistic decision records by concurrent writers (threads in "
        "each of several processes) to one chain, with group commit: decisions/s (median of "
        "runs), per-append latency, the writers' CPU per decision.",
        naive="a transaction per append that reads the head, inserts, and retries when "
        "another writer took that head first.",
        columns=[
            ("writers", joined(at("processes"), at("threads_per_process"), sep=" × ")),
            ("decisions/s", at("group_commit.decisions_per_second_median")),
            ("p50", at("group_commit.p50_ms_median", " ms")),
            ("p99", at("group_commit.p99_ms_median", " ms")),
            ("CPU per decision", at("group_commit.cpu_ms_per_decision_median", " ms")),
            ("mean group", at("group_commit.mean_group_median")),
            ("naive decisions/s", at("naive.decisions_per_second_median")),
            (
                "naive p50 / p99",
                joined(at("naive.p50_ms_median", " ms"), at("naive.p99_ms_median", " ms")),
            ),
            ("ours ÷ naive", ratio("speedup_vs_naive")),
            ("with signed checkpoints", at("group_commit_signed.decisions_per_second_median")),
            ("signed p99", at("group_commit_signed.p99_ms_median", " ms")),
            ("every record covered", at("group_commit_signed.every_record_covered")),
            ("target", at("target_decisions_per_second", "/s")),
        ],
    ),
    "audit_proofs": Kind(
        title="The audit log's proofs",
        module="bench.audit_proofs",
        measures="after a restart, the Merkle tree rebuilt from the stored leaf hashes (time, "
        "bytes, resident memory); then inclusion proofs of random records to the newest signed "
        "checkpoint and consistency proofs between published checkpoints as the API makes "
        "them (record read, proof, note), each checked by the stand-alone verifier.",
        naive="a proof made by reading every leaf hash and building the tree for it.",
        columns=[
            ("records", at("records")),
            ("rebuild", at("rebuild.seconds", " s")),
            ("tree", at("rebuild.tree_bytes_per_record", " B/record")),
            (
                "inclusion p50 / p99",
                joined(at("inclusion.p50_ms", " ms"), at("inclusion.p99_ms", " ms")),
            ),
            (
                "consistency p50 / p99",
                joined(at("consistency.p50_ms", " ms"), at("consistency.p99_ms", " ms")),
            ),
            ("naive p50", at("naive_rebuild_per_proof.p50_ms", " ms", 0)),
            ("ours ÷ naive", at("speedup_vs_naive_p50", "×")),
            ("target p99", at("target_p99_ms", " ms")),
        ],
    ),
    "decide": Kind(
        title="The decision API",
        module="bench.decide",
        measures="`POST /v1/decisions` served by `nextbest serve` under open-loop load at a "
        "fixed rate: server-side latency (`Server-Timing`), the API's CPU per decision and "
        "its memory (PSS over the workers), the share answered without features; in process, "
        "one request after another, the feature and model part of a decision "
        "(`FeastFeatures.read`, then the scores kept ready or `NeedModel.score` per need).",
        naive="in process, `FeatureStore.get_online_features`, then per need one "
        "`Booster.predict` and one `pred_contrib`.",
        columns=[
            ("answered", at("load.rate_achieved", "/s")),
            ("p50", at("load.server_ms.p50", " ms", 2)),
            ("p90", at("load.server_ms.p90", " ms", 2)),
            ("p99", at("load.server_ms.p99", " ms", 2)),
            ("API CPU per decision", at("load.api_cpu_ms_per_request", " ms", 2)),
            ("PSS", at("load.api_rss_mb.pss_max", " MB", 0)),
            (
                "in process p50: naive / ours",
                joined(
                    at("in_process.naive_ms.p50", " ms", 2), at("in_process.ours_ms.p50", " ms", 2)
                ),
            ),
            ("without features", at("load.share_without_features")),
            ("scores kept", at("in_process.share_with_scores_kept")),
            ("naive ÷ ours p50", ratio("in_process.naive_over_ours_p50")),
            ("naive ÷ ours p99", ratio("in_process.naive_over_ours_p99")),
            ("target p50 / p99", joined(at("targets.p50_ms", " ms"), at("targets.p99_ms", " ms"))),
            ("target met", at("meets_target.all")),
            ("policy", at("policy_file")),
        ],
    ),
    "control_groups": Kind(
        title="Control groups on the decision path",
        module="bench.control_groups",
        measures="in process, the gate (every catalog action on a channel through the whole "
        "packaged policy) and arbitration under the control groups (`arbitrate_with_control`), "
        "per decision, for customers differing only in id; blocks alternate with the naive way.",
        naive="the same policy without its two control rules, and plain `arbitrate` (before "
        "control groups).",
        columns=[
            ("decisions", at("decisions")),
            ("candidates", at("candidates")),
            ("ours", at("ours_us_per_decision.median", " µs")),
            ("naive", at("naive_us_per_decision.median", " µs")),
            ("added", at("added_us_per_decision", " µs")),
            ("ours ÷ naive", at("ours_over_naive", "×")),
        ],
    ),
    "simulate": Kind(
        title="The closed-loop simulation",
        module="bench.simulate",
        measures="`nextbest simulate` end to end (building the world, the history, training, "
        "each simulated day through the stream worker, the models, the gate and the decision "
        "service, retraining), and the share of actions with volume whose 90% lift interval "
        "holds the world's true incremental conversions.",
        naive="the history of a smaller bank published through the stream worker, against "
        "ours: backfilled and the stream's state seeded from the archive.",
        columns=[
            ("customers × days", joined(at("plan.customers"), at("plan.days"), sep=" × ")),
            ("policy", at("plan.policy")),
            ("online store", at("online_store")),
            ("set-up", at("seconds.set_up", " s")),
            ("day (median)", at("seconds.day_median", " s")),
            ("total", at("seconds.total", " s")),
            ("≤ 30 min", at("meets_target")),
            ("lift intervals holding the truth", lift_coverage),
            ("history naive ÷ ours", at("history.naive_over_ours", "×")),
        ],
    ),
    "decide_floor": Kind(
        title="The floor under the decision API",
        module="bench.decide_floor",
        measures="the same load as `bench.decide` on a bare ASGI app doing step by step more "
        "of a decision: `bare` answers on the event loop, `thread` from a worker thread, "
        "`reads` adds the online and gate reads, `audit` one audit append, `decide` the "
        "whole decision without FastAPI. It separates the decision's logic from the I/O no "
        "design of it can skip.",
        naive="no naive run; the steps are the comparison.",
        rows=_floor_steps,
        columns=[
            ("step", at("step")),
            ("answered", at("rate_achieved", "/s")),
            ("p50", at("server_ms.p50", " ms")),
            ("p99", at("server_ms.p99", " ms")),
            ("API CPU per request", at("api_cpu_ms_per_request", " ms")),
            ("latency target met", at("meets_latency_target")),
        ],
    ),
    "alerts": Kind(
        title="RM alerts",
        module="bench.alerts",
        measures="from an event sent to Kafka to the RM alert it raises, with `nextbest "
        "stream` as its own process under a steady event rate; in process, the CPU per event "
        "of the alerter's path (debounced rescoring, the gate only on a crossing).",
        naive="a full gated and logged decision on the RM channel for every event.",
        columns=[
            ("events/s", at("stream.rate_achieved")),
            ("alerts", at("stream.alerts")),
            ("event to alert p50", at("stream.event_to_alert_seconds.p50", " s")),
            ("p99", at("stream.event_to_alert_seconds.p99", " s")),
            ("worker CPU", at("stream.worker_cpu_cores", " cores")),
            ("CPU per event: ours", at("in_process.ours_cpu_ms_per_event", " ms")),
            ("naive", at("in_process.naive_cpu_ms_per_event", " ms")),
            ("naive ÷ ours", ratio("in_process.naive_over_ours")),
            ("target p99", at("target_p99_seconds", " s")),
            ("target met", at("stream.meets_target")),
        ],
    ),
}
