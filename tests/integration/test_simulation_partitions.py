"""The simulation's stream over a worker process per partition of the local log (as a bank
scales its stream out) writes what one worker writes: the same days, the same contacts, every
customer's online features and every offline row the same. And the partitioned log itself:
a customer's records stay in one partition, each reader keeps its own offsets, and a log keeps
the partition count it was first written with."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from feature_repo.definitions import ACTIVITY_VIEW
from service.adapters.local_log import LocalLog
from service.adapters.transport import EVENTS_TOPIC, TransportError
from service.bootstrap import Container
from service.usecases.simulation import Simulation
from service.usecases.simulation_policies import seen_in_bulk
from service.usecases.simulation_stream import Elsewhere, SimulatedStream, StreamMemberFailed
from tests.conftest import make_settings
from tests.integration.test_simulation import NO_FLOOR
from tests.integration.test_simulation import PLAN as SIMULATED

#: The simulation module's bank, two days without retraining.
PLAN = replace(SIMULATED, days=2, retrain_every_days=None)


def _run(home: Path, partitions: int) -> dict[str, Any]:
    container = Container(
        make_settings(home / "home", local_partitions=str(partitions), **NO_FLOOR)
    )
    try:
        simulation = Simulation(container, PLAN, home / "bank")
        simulation.set_up()
        assert simulation.stream.partitions == partitions
        checked: list[dict[str, Any]] = []
        simulation.run(on_day=lambda _: checked.append(_seen_both_ways(simulation)))
        ids = sorted(c for w in simulation.worlds for c in w.ids)
        online = [
            (
                f.customer_id,
                f.as_of,
                f.valid_until,
                sorted((k, _comparable(v)) for k, v in f.values.items()),
            )
            for f in container.features.read_many(ids)
        ]
        offline = (
            ds.dataset(container.store_location.offline_dir / ACTIVITY_VIEW)
            .to_table()
            .sort_by([("customer_id", "ascending"), ("event_timestamp", "ascending")])
        )
        return {
            "days": [{**d.as_dict(), "seconds": 0} for d in simulation.days],
            "deliveries": [
                (d.customer_id, d.action_id, d.channel, d.at) for d in simulation.deliveries
            ],
            "online": online,
            "offline": offline,
            "seen": checked[0],
            "events_per_partition": [
                path.stat().st_size if path.exists() else 0
                for path in container.local_log.paths(container.settings.topic(EVENTS_TOPIC))
            ],
        }
    finally:
        container.close()


def _seen_both_ways(simulation: Simulation) -> dict[str, Any]:
    """A slot's opportunities read and scored by ``see`` (a share in each process) and all in
    this process; and ``see`` with this process's models changed under it."""
    container = simulation.container
    ids = sorted(c for w in simulation.worlds for c in w.ids)
    pool = [(c, channel) for c in ids[::3] for channel in ("mobile_app", "email", "rm")]
    seen = simulation.stream.see(pool, simulation.now)
    elsewhere = [s for s in seen if isinstance(s, Elsewhere)]
    shared = simulation.stream.fetch(seen)
    alone = seen_in_bulk(container, pool, simulation.now)
    models = container.models
    served = models._models
    models._models = dict(list(served.items())[:-1])  # one need fewer than the others serve
    try:
        simulation.stream.see(pool, simulation.now)
        refused = None
    except StreamMemberFailed as error:
        refused = str(error)
    finally:
        models._models = served
    return {
        "pool": len(pool),
        "elsewhere": len(elsewhere),
        # What came from the other process before fetching: the scores, in their place.
        "elsewhere_scores": [e.scores for e in elsewhere]
        == [
            a.scored.scores
            for a, s in zip(alone, seen, strict=True)
            if isinstance(s, Elsewhere) and a is not None
        ],
        "scored": sum(bool(s and s.scored.scores) for s in alone),
        "same": [
            (a is None, a and (a.read, a.scored.values, a.scored.scores, a.scored.stale))
            for a in alone
        ]
        == [
            (b is None, b and (b.read, b.scored.values, b.scored.scores, b.scored.stale))
            for b in shared
        ],
        "models_kept": all(b is None or b.scored.models is served for b in shared),
        "refused": refused,
    }


def _comparable(value: float | None) -> object:
    return "nan" if value is not None and math.isnan(value) else value


@pytest.fixture(scope="module")
def one_and_two(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    yield (
        _run(tmp_path_factory.mktemp("one-partition"), 1),
        _run(tmp_path_factory.mktemp("two-partitions"), 2),
    )


def test_two_stream_workers_write_what_one_writes(one_and_two) -> None:
    one, two = one_and_two
    assert all(size > 0 for size in two["events_per_partition"])  # both partitions had work
    assert len(two["events_per_partition"]) == 2
    assert two["days"] == one["days"]
    assert two["deliveries"] == one["deliveries"] and one["deliveries"]
    assert two["online"] == one["online"]
    assert any(values for *_, values in one["online"])
    assert two["offline"].num_rows == one["offline"].num_rows > 0
    assert two["offline"].equals(one["offline"])


def test_each_process_sees_a_share_of_the_opportunities_as_one_would_see_them_all(
    one_and_two,
) -> None:
    for run in one_and_two:
        seen = run["seen"]
        assert seen["scored"] > seen["pool"] // 2  # most are scored: the check compares scores
        assert seen["same"] and seen["models_kept"] and seen["elsewhere_scores"]
    # The other process scored with models this one does not serve: refused, not mixed in.
    one, two = one_and_two
    assert one["seen"]["elsewhere"] == 0
    assert two["seen"]["elsewhere"] > two["seen"]["pool"] // 3  # the other process's share
    assert one["seen"]["refused"] is None
    assert "scored with models" in two["seen"]["refused"]


def test_a_customers_records_stay_in_one_partition_read_by_its_own_reader(
    tmp_path: Path,
) -> None:
    log = LocalLog(tmp_path, partitions=3)
    producer = log.producer()
    keys = [f"C{i}" for i in range(60)]
    for round_ in range(2):
        for key in keys:
            producer.send("t", key, f"{key}:{round_}".encode())
    producer.send("t", None, b"keyless")
    producer.flush()
    readers = [log.consumer("t", "g", [p]) for p in range(3)]
    seen: dict[str, set[int]] = {}
    for reader in readers:
        for record in reader.poll(1_000):
            named = "None" if record.key is None else record.key.decode()
            seen.setdefault(named, set()).add(record.partition)
            assert record.partition == reader.partitions()[0]
    assert all(len(parts) == 1 for parts in seen.values())
    assert {p for parts in seen.values() for p in parts} == {0, 1, 2}
    assert seen["None"] == {0}
    assert readers[1].poll(1_000) == []  # read already
    # Each partition's offsets are its own: one reader's commit moves no other.
    reader = log.consumer("t", "g", [1])
    reader.commit(reader.poll(1_000)[:3])
    assert log.consumer("t", "g", [1]).poll(1)[0].offset == 3
    assert log.consumer("t", "g", [2]).poll(1)[0].offset == 0
    everything = log.consumer("t", "other").poll(10_000)
    assert len(everything) == 2 * len(keys) + 1


def test_a_log_keeps_the_partition_count_it_was_first_written_with(tmp_path: Path) -> None:
    LocalLog(tmp_path, partitions=2).producer().flush()
    assert LocalLog(tmp_path, partitions=2).partitions == 2
    with pytest.raises(TransportError, match="has 2 partition"):
        LocalLog(tmp_path, partitions=4)
    # A log written before partitions existed has one.
    older = tmp_path / "older"
    older.mkdir()
    (older / "t.log").write_bytes(b"")
    with pytest.raises(TransportError, match="has 1 partition"):
        LocalLog(older, partitions=2)
    with pytest.raises(ValueError, match="not among"):
        LocalLog(tmp_path, partitions=2).consumer("t", "g", [2])


def test_a_partitions_worker_that_dies_fails_the_step_loudly(tmp_path: Path) -> None:
    container = Container(make_settings(tmp_path / "home", local_partitions="2"))
    stream = SimulatedStream(container, lambda: 0)
    try:
        process, _ = stream._members[0]
        process.kill()
        process.join()
        with pytest.raises(StreamMemberFailed, match="went away"):
            stream.drain()
    finally:
        stream.close()
        container.close()
