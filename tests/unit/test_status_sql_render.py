"""``vectorizer status`` of a paused vectorizer, and the lag a worker recorded when no broker is
asked; the run-control flags survive the supervisor's command line."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

from infra.ops.render import REPORT_WIDTH, jsonable, render_report
from pgai_orm.catalog.report import Report, VectorizerStatus, VersionStatus
from processors.cli import RunControl, worker_command
from processors.progress import behind

PAUSED_AT = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def paused_report() -> Report:
    version = VersionStatus(1, "active", "public.posts_embedding_store", 10, 10, 40, "0/2154E48",
                            0.0, "g1", None, pending_recorded=12345, pending_recorded_at=PAUSED_AT)
    vz = VectorizerStatus("public_posts_embedding", "public.posts", 10, 1, 0, [version],
                          topic="vectorizer.app.public.posts", paused=True, paused_at=PAUSED_AT)
    return Report("app", [], [vz], None)


def test_a_paused_vectorizer_says_so_in_text_and_json() -> None:
    text = render_report(paused_report())
    assert "vectorizer public_posts_embedding: serving version 1, 0 errors, paused" in text
    assert "paused since 2026-12-01T10:00:00+00:00: nothing is embedded, changes wait in Kafka" \
        in text
    assert "(resume it with `vectorizer resume public_posts_embedding`)" in text
    assert all(len(line) <= REPORT_WIDTH for line in text.splitlines())
    data = json.loads(json.dumps(asdict(paused_report()), default=jsonable))
    (vz,) = data["vectorizers"]
    assert vz["paused"] is True and vz["paused_at"] == "2026-12-01T10:00:00+00:00"
    assert vz["versions"][0]["pending_recorded"] == 12345


def test_without_a_broker_the_lag_column_shows_what_a_worker_recorded() -> None:
    text = render_report(paused_report())
    assert "~12345" in text and "~N: as a worker last recorded it" in text


def test_run_control_flags_parse_and_are_passed_on_unchanged() -> None:
    control = RunControl(("a", "b"), (7,), once=True, exit_on_error=True)
    args = ["--database-url", "postgresql://u@h/db", "--kafka-bootstrap-servers", "k:9092",
            *control.args()]
    ctx = worker_command.make_context("worker", args)
    assert (ctx.params["names"], ctx.params["ids"]) == (("a", "b"), (7,))
    assert ctx.params["once"] and ctx.params["exit_on_error"]
    assert worker_command.make_context("worker", [*args[:4], "-i", "3"]).params["ids"] == (3,)
    assert RunControl().args() == []


def test_behind_counts_what_the_committed_offsets_have_not_reached() -> None:
    assert behind({0: 10, 1: 5}, {0: 4}) == 11
    assert behind({0: 10}, {0: 12}) == 0
    assert behind({}, {}) == 0
