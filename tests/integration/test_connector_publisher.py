"""The connector's publisher against the real broker: which LSN is safe to confirm, and the
bound on unacknowledged events (what keeps a huge transaction's memory bounded)."""

from __future__ import annotations

import threading
import uuid

from kafka.admin import KafkaAdminClient, NewTopic

from connector.publisher import AckGroup, CommitTracker, Publisher


def _topic(servers: str, partitions: int = 3) -> str:
    name = f"publisher-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def test_tracker_confirms_only_fully_acked_prefixes_of_commits() -> None:
    tracker = CommitTracker()
    first = tracker.open()
    tracker.add(first)
    tracker.add(first)
    tracker.close(100)
    second = tracker.open()
    tracker.add(second)
    tracker.close(200)
    third = tracker.open()
    tracker.add(third)  # still open: no commit yet
    tracker.acked(second)  # acks arrive out of order across partitions
    assert tracker.safe_lsn() == 0
    tracker.acked(first)
    assert tracker.safe_lsn() == 0  # one event of the first commit still unacknowledged
    tracker.acked(first)
    assert tracker.safe_lsn() == 200
    tracker.acked(third)
    assert tracker.safe_lsn() == 200 and not tracker.idle()  # acked, but not committed
    tracker.discard_open()
    assert tracker.idle()


def test_publisher_bounds_unacknowledged_events_and_reports_safe_lsn(kafka_bootstrap_servers: str) -> None:
    topic = _topic(kafka_bootstrap_servers)
    publisher = Publisher(kafka_bootstrap_servers, max_in_flight_events=50)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, publisher.in_flight_events)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for txn in range(20):
            for i in range(100):
                publisher.send_tracked(topic, f'{{"id":{txn * 100 + i}}}'.encode(), b"x" * 1000)
            publisher.commit(1000 + txn)
            publisher.drain()
        publisher.flush(timeout=60)
        assert publisher.tracker.safe_lsn() == 1019
        assert publisher.sent == 2000
        group = AckGroup()
        for i in range(300):
            publisher.send_grouped(topic, f'{{"id":-{i}}}'.encode(), None, group)
        publisher.wait(group, timeout=30)
        assert group.pending == 0 and publisher.sent == 2300
    finally:
        done.set()
        watcher.join()
        publisher.close()
    assert 0 < peak <= 50
