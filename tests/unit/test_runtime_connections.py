"""Either URL form works everywhere; backoff grows to a cap; a failure to reach a service is one
line naming it and the setting to check."""

from __future__ import annotations

import psycopg
import pytest

from pgai_orm.runtime.backoff import Backoff
from pgai_orm.runtime.failures import describe_unreachable
from pgai_orm.runtime.urls import DatabaseUrlError, describe_database, to_conninfo, to_sqlalchemy_url


@pytest.mark.parametrize(("url", "conninfo"), [
    ("postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
    ("postgres://u@h/db", "postgres://u@h/db"),
    ("postgresql+psycopg://u:p@h:5432/db?sslmode=require", "postgresql://u:p@h:5432/db?sslmode=require"),
    ("postgresql+psycopg2://u@h/db", "postgresql://u@h/db"),
    ("host=h dbname=db user=u", "host=h dbname=db user=u"),
])
def test_both_forms_become_a_libpq_conninfo(url: str, conninfo: str) -> None:
    assert to_conninfo(url) == conninfo
    psycopg.conninfo.conninfo_to_dict(to_conninfo(url))  # libpq parses it


def test_the_sqlalchemy_form_for_the_orm() -> None:
    assert to_sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert to_sqlalchemy_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "", "not a url = = ="])
def test_anything_else_is_refused_with_the_form_to_write(url: str) -> None:
    with pytest.raises(DatabaseUrlError, match=r"postgresql://user:password@host:5432/dbname"):
        to_conninfo(url)


def test_a_database_is_named_without_its_password() -> None:
    assert describe_database("postgresql+psycopg://u:secret@db.example:6543/app") == "db.example:6543/app"
    assert describe_database("postgresql://u@/app") == "localhost:5432/app"


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(initial=1, cap=10, jitter=0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next_delay() == 1
    jittered = Backoff(initial=4, cap=4, jitter=0.25)
    assert all(3 <= jittered.next_delay() <= 4 for _ in range(50))
    with pytest.raises(ValueError):
        Backoff(initial=5, cap=1)


def test_an_unreachable_database_is_one_line_naming_it_and_the_setting() -> None:
    url = "postgresql://u:secret@127.0.0.1:1/app"
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(url, connect_timeout=2)
    line = describe_unreachable(caught.value, database_url=url, bootstrap_servers="k:9092")
    assert line is not None and "\n" not in line
    assert line.startswith("cannot reach the database 127.0.0.1:1/app (")
    assert "DATABASE_URL" in line and "secret" not in line


def test_a_dead_broker_names_the_bootstrap_servers() -> None:
    kafka_errors = pytest.importorskip("aiokafka.errors")
    exc = kafka_errors.KafkaConnectionError("Unable to bootstrap from [('k', 9092)]")
    line = describe_unreachable(RuntimeError("send failed").with_traceback(None), bootstrap_servers="k:9092")
    assert line is None  # not a connection failure: keeps its traceback
    wrapped = RuntimeError("producer failed")
    wrapped.__cause__ = exc
    line = describe_unreachable(wrapped, bootstrap_servers="k:9092")
    assert line is not None and line.startswith("cannot reach the Kafka broker k:9092 (")
    assert "KAFKA_BOOTSTRAP_SERVERS" in line
