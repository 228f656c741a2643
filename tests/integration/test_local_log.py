import pytest

from service.adapters.local_log import LocalLog
from service.adapters.transport import TransportError


def test_consumer_resumes_after_the_last_commit_and_sees_new_records(tmp_path) -> None:
    log = LocalLog(tmp_path)
    producer = log.producer()
    for i in range(5):
        producer.send("t", f"k{i}", f"v{i}".encode())
    producer.send("t", None, b"\xff raw bytes survive")
    producer.flush()

    consumer = log.consumer("t", "g")
    first = consumer.poll(3)
    assert [(r.offset, r.key, r.value) for r in first] == [
        (0, b"k0", b"v0"),
        (1, b"k1", b"v1"),
        (2, b"k2", b"v2"),
    ]
    consumer.commit(first[:2])  # offset 2 read but not committed: it must come again

    again = log.consumer("t", "g").poll(10)
    assert [r.offset for r in again] == [2, 3, 4, 5]
    assert again[-1].key is None and again[-1].value == b"\xff raw bytes survive"
    assert [r.offset for r in log.consumer("t", "other-group").poll(10)] == list(range(6))


def test_a_half_written_record_is_not_returned(tmp_path) -> None:
    log = LocalLog(tmp_path)
    producer = log.producer()
    producer.send("t", "k", b"whole")
    producer.flush()
    with open(log.path("t"), "ab") as handle:
        handle.write(b"\x00\x00\x00\x01k\x00\x00\x00\x10par")  # header promises 16 bytes
    consumer = log.consumer("t", "g")
    assert [r.value for r in consumer.poll(10)] == [b"whole"]
    assert consumer.poll(10) == []


def test_tombstones_and_headers_survive_and_old_records_still_read(tmp_path) -> None:
    log = LocalLog(tmp_path)
    producer = log.producer()
    producer.send("t", "k0", b"plain")  # framed as before headers existed
    producer.send("t", "k1", None)
    producer.send("t", None, b"v", [("nextbest-principal", b'{"name": "a"}'), ("x", b"\x00")])
    producer.flush()
    with open(log.path("t"), "rb") as handle:
        assert handle.read(13) == b"\x00\x00\x00\x02\x00\x00\x00\x05k0pla"
    records = log.consumer("t", "g").poll(10)
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"k0", b"plain", ()),
        (b"k1", None, ()),
        (None, b"v", (("nextbest-principal", b'{"name": "a"}'), ("x", b"\x00"))),
    ]


def test_a_send_the_disk_refuses_fails_loudly_and_counts_as_not_written(tmp_path) -> None:
    log = LocalLog(tmp_path)
    log.path("t").mkdir()  # the log file cannot be opened for writing
    producer = log.producer()
    producer.send("t", "k", b"v")
    with pytest.raises(TransportError, match="could not be written"):
        producer.flush()
    producer.flush()  # nothing left over to write (or to fail) again
