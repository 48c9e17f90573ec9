"""One logging setup for every long-running process: connector, worker supervisor, faust children.

``--log-format text`` (default) writes ``<time> <LEVEL> [<pid>] <logger>: <message>`` lines;
``--log-format json`` (``$VECTORIZER_LOG_FORMAT``) writes one JSON object per line with ``ts``
(UTC, ISO 8601), ``level``, ``logger``, ``message``, ``pid``, every ``extra=`` field the call
passed (``vectorizer``, ``version``, ``partition``, ``lsn``, ...), the process's static fields
(a faust child adds its ``vectorizer`` and ``version`` to every line) and ``exc`` with the
traceback. In JSON mode warnings and uncaught exceptions (main thread and other threads) are
logged too, so every line on stderr parses.

Secrets: both formats scrub the final text. The values of environment variables whose names
look secret (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``), read when a
line is formatted, and the password part of any ``scheme://user:password@`` URL are replaced
by ``***``. Nothing here logs the environment; the scrubber is the backstop for code that might
(an exception message quoting a request header, a URL with a password).
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
import os
import re
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import orjson

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "StaticFields",
    "TextFormatter",
    "logging_config",
    "scrub",
    "setup_logging",
]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_MIN_SECRET = 8  # shorter values ("true", "1") would blank out ordinary text


def _secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)  # longest first: a key containing another


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """``text`` without secret environment values and URL passwords (each becomes ``***``)."""
    for secret in _secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***@", text)
    return text


class TextFormatter(logging.Formatter):
    """The plain format, scrubbed."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _jsonable(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, secrets) for v in value]
    return scrub(str(value), secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, pid, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        secrets = _secrets()
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage(), secrets),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in data:
                data[key] = _jsonable(value, secrets)
        if record.exc_info:
            data["exc"] = scrub(self.formatException(record.exc_info), secrets)
        elif record.exc_text:
            data["exc"] = scrub(record.exc_text, secrets)
        if record.stack_info:
            data["stack"] = scrub(self.formatStack(record.stack_info), secrets)
        # scrub the serialised line too: a secret could hide in a key or a non-string value
        return scrub(orjson.dumps(data, default=str).decode(), secrets)


class StaticFields(logging.Filter):
    """Adds the same fields to every record (unless the call gave its own value)."""

    def __init__(self, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def logging_config(log_format: str = "text", level: str | int = "INFO",
                   fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler in ``log_format`` at ``level``.

    It is also what a faust child hands to ``faust.Worker(logging_config=...)``, so faust's own
    loggers write the same lines.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter}
    )
    if isinstance(level, str):
        level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vectorizer": formatter},
        "filters": {"static": {"()": StaticFields, "fields": dict(fields or {})}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "vectorizer",
                "filters": ["static"],
            },
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def _log_uncaught(exc_type: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("uncaught").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def install_json_hooks() -> None:
    """Route warnings and uncaught exceptions through logging (so they come out as JSON)."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_thread


def setup_logging(log_format: str = "text", level: str | int = "INFO",
                  fields: Mapping[str, Any] | None = None) -> None:
    """Configure the root logger of this process (replacing any handler it had)."""
    logging.root.handlers.clear()
    logging.config.dictConfig(logging_config(log_format, level, fields))
    if log_format == "json":
        install_json_hooks()
