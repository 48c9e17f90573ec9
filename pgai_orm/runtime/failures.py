"""One line per failure to reach a service: what is unreachable and which setting to check.

A connection failure is not a bug, so it gets no traceback: the connector, the worker and the
operator commands log (or print) :func:`describe_unreachable`'s line and retry with
:class:`~pgai_orm.runtime.backoff.Backoff`. Anything this module does not recognise is a real
error and keeps its traceback.

Kafka errors are recognised by the module of their class (``kafka.*`` from kafka-python,
``aiokafka.*``), so this module imports neither client.
"""

from __future__ import annotations

import psycopg

from pgai_orm.runtime.logs import scrub
from pgai_orm.runtime.urls import DatabaseUrlError, describe_database

__all__ = ["BROKER_HINT", "DATABASE_HINT", "describe_unreachable", "is_broker_error",
           "is_database_unreachable", "one_line"]

DATABASE_HINT = ("check DATABASE_URL (or --database-url) and that PostgreSQL runs and accepts"
                 " connections from here")
BROKER_HINT = ("check KAFKA_BOOTSTRAP_SERVERS (or --kafka-bootstrap-servers) and that the broker"
               " runs and advertises an address reachable from here")
_KAFKA_MODULES = ("kafka", "aiokafka")
# Kafka errors that mean "no broker answered", by class name (both clients name them alike).
_KAFKA_UNREACHABLE = {"NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError",
                      "NodeNotReadyError", "RequestTimedOutError", "BrokerNotAvailableError"}


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, secrets scrubbed (psycopg's span several lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(text)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_database_unreachable(exc: BaseException) -> bool:
    """A connection to PostgreSQL could not be made or was lost (not an SQL error)."""
    return any(isinstance(e, psycopg.OperationalError) and not isinstance(e, psycopg.errors.QueryCanceled)
               for e in _chain(exc))


def is_broker_error(exc: BaseException) -> bool:
    """A Kafka client could not reach the broker (either client, or a timeout inside one)."""
    for e in _chain(exc):
        module = type(e).__module__.split(".")[0]
        if module in _KAFKA_MODULES and type(e).__name__ in _KAFKA_UNREACHABLE:
            return True
    return False


def describe_unreachable(exc: BaseException, *, database_url: str | None = None,
                         bootstrap_servers: str | None = None) -> str | None:
    """``"cannot reach <what> at <where> (<reason>): <what to check>"``, or None when ``exc`` is
    not a failure to reach the database or the broker."""
    for e in _chain(exc):
        if isinstance(e, DatabaseUrlError):
            return str(e)
    if is_database_unreachable(exc):
        where = describe_database(database_url) if database_url else "the database"
        reason = next(one_line(e) for e in _chain(exc) if isinstance(e, psycopg.OperationalError))
        return f"cannot reach the database {where} ({reason}): {DATABASE_HINT}"
    if is_broker_error(exc):
        where = bootstrap_servers or "the broker"
        reason = next(f"{type(e).__name__}: {one_line(e)}" for e in _chain(exc)
                      if type(e).__module__.split(".")[0] in _KAFKA_MODULES)
        return f"cannot reach the Kafka broker {where} ({reason}): {BROKER_HINT}"
    return None
