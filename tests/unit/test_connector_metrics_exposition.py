"""The connector's Prometheus exposition follows the naming guide: counters end in _total,
gauges never do, no _created series, no hand-made rates; snapshot size is exact once done."""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from connector.metrics import ConnectorMetrics


def exposition(metrics: ConnectorMetrics) -> dict[str, tuple[str, list[str]]]:
    """metric family -> (type, sample lines)."""
    families: dict[str, tuple[str, list[str]]] = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        typed = re.match(r"# TYPE (\S+) (\S+)", line)
        if typed:
            families[typed.group(1)] = (typed.group(2), [])
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name
            family = next(f for f in sorted(families, key=len, reverse=True) if name.group(0).startswith(f))
            families[family][1].append(line)
    return families


def test_names_types_and_series() -> None:
    metrics = ConnectorMetrics("vectorizer_app")
    metrics.count("stream", 3)
    metrics.snapshot_started("first")
    metrics.recreated_slot("dropped")
    metrics.snapshot("public.posts", 100, 250)
    families = exposition(metrics)
    for family, (kind, samples) in families.items():
        assert family.startswith("vectorizer_connector_"), family
        if kind == "counter":
            assert all(s.split("{")[0].split(" ")[0].endswith("_total") for s in samples), samples
        else:
            assert not family.endswith("_total"), f"gauge {family} has a counter's suffix"
        assert not any("_created" in s for s in samples), samples
    assert "vectorizer_connector_events_per_second" not in families  # leave rates to rate()
    kind = (families.get("vectorizer_connector_events") or families["vectorizer_connector_events_total"])[0]
    assert kind == "counter"
    text = generate_latest(metrics.registry).decode()
    assert 'vectorizer_connector_events_total{slot="vectorizer_app",source="stream"} 3.0' in text


def test_snapshot_progress_ends_with_the_exact_row_count() -> None:
    metrics = ConnectorMetrics("s")
    seen: list[tuple[str, int, int | None, bool]] = []
    metrics.on_snapshot(lambda *args: seen.append(args))
    metrics.snapshot("public.posts", 5000, 9000)  # the planner's estimate while it runs
    metrics.snapshot("public.posts", 9120, 9120)  # done: the exact count
    metrics.count("snapshot", 0)
    text = generate_latest(metrics.registry).decode()
    assert 'vectorizer_connector_snapshot_table_rows{slot="s",table="public.posts"} 9120.0' in text
    assert 'vectorizer_connector_snapshot_rows{slot="s",table="public.posts"} 9120.0' in text
    assert seen[-1] == ("public.posts", 9120, 9120, True)
