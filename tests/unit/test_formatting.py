"""Formatting: pgai's python_template and chunk_value on rows decoded from change events."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from processors.formatting import (
    FormattingError,
    MissingColumnError,
    TemplateSyntaxError,
    formatter_for,
    render_value,
    template_placeholders,
)


def _template_config(template: str) -> Any:
    try:
        from pgai_orm.configuration import FormattingPythonTemplateConfig
    except ImportError:
        return SimpleNamespace(implementation="python_template", template=template)
    return FormattingPythonTemplateConfig(template=template)


def _chunk_value_config() -> Any:
    try:
        from pgai_orm.configuration import FormattingChunkValueConfig
    except ImportError:
        return SimpleNamespace(implementation="chunk_value")
    return FormattingChunkValueConfig()


def test_template_uses_chunk_and_columns() -> None:
    fmt = formatter_for(_template_config("$title - $chunk"))
    assert fmt("body text", {"id": 1, "title": "Hello", "content": "x"}) == "Hello - body text"


def test_chunk_value_returns_chunk() -> None:
    assert formatter_for(_chunk_value_config())("only this", {"title": "t"}) == "only this"


def test_missing_column_names_the_column() -> None:
    fmt = formatter_for(_template_config("${author}: $chunk"))
    with pytest.raises(MissingColumnError, match=r"\$author") as info:
        fmt("c", {"title": "t"})
    assert info.value.column == "author"
    assert isinstance(info.value, FormattingError)


def test_non_text_values_render_sensibly() -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    key = uuid.UUID(int=7)
    row = {
        "n": 42,
        "price": decimal.Decimal("9.50"),
        "ratio": 0.25,
        "missing": None,
        "at": when,
        "day": dt.date(2024, 5, 1),
        "key": key,
        "meta": {"tags": ["a", "é"]},
        "flag": True,
    }
    fmt = formatter_for(
        _template_config("$n|$price|$ratio|$missing|$at|$day|$key|$meta|$flag|$chunk")
    )
    assert fmt("c", row) == (f'42|9.50|0.25||{when}|2024-05-01|{key}|{{"tags": ["a", "é"]}}|True|c')
    assert render_value(b"bytes") == "bytes"


def test_chunk_placeholder_wins_over_a_column_named_chunk() -> None:
    fmt = formatter_for(_template_config("$chunk"))
    assert fmt("the chunk", {"chunk": "a column"}) == "the chunk"


def test_literal_dollar_and_invalid_template() -> None:
    assert formatter_for(_template_config("$$5 $chunk"))("c", {}) == "$5 c"
    with pytest.raises(TemplateSyntaxError):
        formatter_for(SimpleNamespace(implementation="python_template", template="cost: $ $chunk"))


def test_template_placeholders_for_migration_checks() -> None:
    assert template_placeholders("$title by ${author} - $chunk") == ["title", "author"]


def test_unknown_implementation() -> None:
    with pytest.raises(FormattingError, match="implementation"):
        formatter_for(SimpleNamespace(implementation="jinja"))
