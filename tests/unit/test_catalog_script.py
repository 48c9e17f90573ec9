"""The catalog script splits into single statements without breaking function bodies."""

from pgai_orm.catalog import catalog_sql
from pgai_orm.catalog.schema import split_sql_script


def test_function_bodies_stay_whole() -> None:
    statements = split_sql_script(catalog_sql())
    functions = [s for s in statements if s.startswith("CREATE OR REPLACE FUNCTION")]
    assert len(functions) >= 8
    for statement in functions:
        assert statement.count("$fn$") == 2, statement[:80]
        assert statement.rstrip().endswith("$fn$")
    assert all(not s.endswith(";") for s in statements)
    assert statements[0] == "CREATE EXTENSION IF NOT EXISTS vector"


def test_split_keeps_semicolons_inside_bodies() -> None:
    script = "-- comment\nCREATE TABLE a (x int);\nCREATE FUNCTION f() RETURNS void AS $fn$\nBEGIN\n  PERFORM 1;\nEND\n$fn$ LANGUAGE plpgsql;\n"
    assert split_sql_script(script) == [
        "CREATE TABLE a (x int)",
        "CREATE FUNCTION f() RETURNS void AS $fn$\nBEGIN\n  PERFORM 1;\nEND\n$fn$ LANGUAGE plpgsql",
    ]
