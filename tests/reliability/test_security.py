"""Hostile identifiers end to end, API keys kept out of every output, least-privilege roles.

The GRANTs used here are the ones docs/security.md documents.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import pytest
from kafka import KafkaConsumer
from psycopg import sql

from infra.faults import TEXT, Pipeline, run_sql
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.support import polling
from tests.support.configs import OPENAI_KEY_ENV, local_config, openai_config
from tests.support.vectorizers import create_vectorizer

pytestmark = pytest.mark.reliability

SCHEMA = 'My "Schema"; DROP TABLE x'
TABLE = "Blog Posts; DROP TABLE y --"
KEY = 'Post "Id"'
TITLE = "Ti'tle; x"
CONTENT = 'Body "Text"; --'
NAME = 'My "Vectorizer"; DROP'
TARGET = 'Store "Tbl"; --'


def hostile_pipeline(url: str, servers: str, log_dir: Path) -> Pipeline:
    run_sql(url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
    run_sql(url, sql.SQL("CREATE TABLE {} ({k} int PRIMARY KEY, {t} text, {c} text)").format(
        sql.Identifier(SCHEMA, TABLE), k=sql.Identifier(KEY), t=sql.Identifier(TITLE),
        c=sql.Identifier(CONTENT)))
    config = local_config()
    config["chunking"]["chunk_column"] = CONTENT
    config["formatting"]["template"] = "$chunk"  # string.Template names cannot hold quotes
    vectorizer_id = create_vectorizer(url, TABLE, config, source_schema=SCHEMA, name=NAME,
                                      target_schema=SCHEMA, target_table=TARGET)
    return Pipeline(url, servers, SCHEMA, TABLE, vectorizer_id, config,
                    f"s{uuid.uuid4().hex[:6]}", log_dir, key=KEY)


def write_rows(p: Pipeline, ids: range, text: str = TEXT) -> None:
    for i in ids:
        p.sql(sql.SQL("INSERT INTO {} ({k}, {t}, {c}) VALUES (%s, %s, %s) ON CONFLICT ({k})"
                      " DO UPDATE SET {c} = excluded.{c}").format(
            sql.Identifier(SCHEMA, TABLE), k=sql.Identifier(KEY), t=sql.Identifier(TITLE),
            c=sql.Identifier(CONTENT)), (i, f"t{i}", f"{text} row {i}."))


def test_quotes_semicolons_spaces_and_case_in_every_name(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    p = hostile_pipeline(fresh_database_url, kafka_bootstrap_servers, tmp_path)
    assert p.store_table() == (SCHEMA, TARGET)
    write_rows(p, range(1, 6))  # snapshot
    p.start()
    try:
        p.wait_clean("the snapshot of the hostile table")
        write_rows(p, range(4, 9), "Changed text")  # stream: updates and inserts
        p.sql(sql.SQL("DELETE FROM {} WHERE {} = 1").format(sql.Identifier(SCHEMA, TABLE),
                                                             sql.Identifier(KEY)))
        audit = p.wait_clean("the streamed changes of the hostile table")
        assert audit.rows_checked == 7
        assert not p.sql("SELECT 1 FROM vectorizer.errors")
    finally:
        p.stop()


def role_url(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:secret@{host}"))


def test_connector_and_worker_run_with_least_privileges(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    url = fresh_database_url
    p = hostile_pipeline(url, kafka_bootstrap_servers, tmp_path)
    suffix = uuid.uuid4().hex[:6]
    conn_role, worker_role = f"vz_connector_{suffix}", f"vz_worker_{suffix}"
    database = p.sql("SELECT current_database()")[0][0]
    grants = [
        # connector: REPLICATION LOGIN, read the catalog and the published tables, own its state
        f"CREATE ROLE {conn_role} LOGIN REPLICATION PASSWORD 'secret'",
        f"GRANT CONNECT ON DATABASE {database} TO {conn_role}",
        f"GRANT USAGE ON SCHEMA vectorizer TO {conn_role}",
        f"GRANT SELECT ON vectorizer.vectorizers, vectorizer.config_versions,"
        f" vectorizer.catalog_version, vectorizer.instance TO {conn_role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON vectorizer.connector_state,"
        f" vectorizer.connector_tables TO {conn_role}",
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), sql.Identifier(conn_role)),
        sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(SCHEMA, TABLE), sql.Identifier(conn_role)),
        # worker: read the catalog and the source, write its store, applied_state and errors
        f"CREATE ROLE {worker_role} LOGIN PASSWORD 'secret'",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {worker_role}",
        f"GRANT USAGE ON SCHEMA vectorizer TO {worker_role}",
        f"GRANT SELECT ON vectorizer.catalog_version, vectorizer.instance TO {worker_role}",
        # row locks (FOR KEY SHARE of the vectorizer) need UPDATE on one column besides SELECT
        f"GRANT SELECT, UPDATE (updated_at) ON vectorizer.vectorizers TO {worker_role}",
        f"GRANT SELECT, UPDATE ON vectorizer.config_versions TO {worker_role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON vectorizer.applied_state, vectorizer.errors"
        f" TO {worker_role}",
        f"GRANT USAGE ON SEQUENCE vectorizer.errors_id_seq TO {worker_role}",
        f"GRANT SELECT, INSERT, UPDATE ON vectorizer.usage, vectorizer.worker_progress"
        f" TO {worker_role}",
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), sql.Identifier(worker_role)),
        sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(SCHEMA, TABLE), sql.Identifier(worker_role)),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            sql.Identifier(SCHEMA, TARGET), sql.Identifier(worker_role)),
    ]
    for grant in grants:
        p.sql(grant)
    admin_url = p.url
    write_rows(p, range(1, 6))
    try:
        p.url = role_url(admin_url, conn_role)
        p.start_connector()
        p.url = role_url(admin_url, worker_role)
        p.start_worker()
        p.url = admin_url
        p.wait_clean("the snapshot under least privileges")
        write_rows(p, range(4, 9), "Changed text")
        p.wait_clean("streamed changes under least privileges")
        # the roles really are limited: neither may touch what it does not need
        for role in (conn_role, worker_role):
            with pytest.raises(Exception, match="permission denied"):
                run_sql(role_url(admin_url, role), "DELETE FROM vectorizer.vectorizers")
        with pytest.raises(Exception, match="permission denied"):
            run_sql(role_url(admin_url, worker_role), sql.SQL("DELETE FROM {}").format(
                sql.Identifier(SCHEMA, TABLE)))
    finally:
        p.url = admin_url
        p.stop()
        for role in (conn_role, worker_role):
            p.sql(f"DROP OWNED BY {role}")
            p.sql(f"DROP ROLE {role}")


def test_api_keys_never_leak_into_logs_database_topics_or_errors(
        fresh_database_url: str, kafka_bootstrap_servers: str, tmp_path: Path) -> None:
    wrong_key = "sk-WRONG-" + uuid.uuid4().hex
    with FakeOpenAIServer() as server:
        config = openai_config(server.base_url)
        url = fresh_database_url
        table = f"keys_{uuid.uuid4().hex[:8]}"
        run_sql(url, sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text)")
                .format(sql.Identifier(table)))
        vectorizer_id = create_vectorizer(url, table, config)
        p = Pipeline(url, kafka_bootstrap_servers, "public", table, vectorizer_id, config,
                     f"k{uuid.uuid4().hex[:6]}", tmp_path, env={OPENAI_KEY_ENV: wrong_key})
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table))
        run_sql(url, insert, (1, "one", TEXT))
        p.start()
        try:
            # the server answers 401 and echoes the presented key in its message (as OpenAI does)
            errors = polling.wait_for(lambda: run_sql(url, "SELECT message, details::text FROM"
                                                      " vectorizer.errors"), "the 401", 60, 0.2)
            assert wrong_key[:12] not in str(errors)
            # the right key: the pipeline goes on
            p.stop_worker()
            p.env[OPENAI_KEY_ENV] = server.api_key
            p.start_worker()
            run_sql(url, sql.SQL("UPDATE {} SET content = %s").format(sql.Identifier(table)),
                    ("Fixed. " + TEXT,))
            p.wait_clean("the row with the right key")
        finally:
            p.stop()
        secrets = [wrong_key, server.api_key]
        logs = p.logs() + "".join(f.read_text(errors="replace") for f in tmp_path.glob("*.log"))
        database_dump = str(run_sql(url, "SELECT config::text FROM vectorizer.vectorizers")) + \
            str(run_sql(url, "SELECT config::text FROM vectorizer.config_versions")) + \
            str(run_sql(url, "SELECT message, details::text FROM vectorizer.errors"))
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=2000)
        try:
            topics = [t for t in consumer.topics() if t.startswith(p.prefix)]
            assert any(t.endswith(".dlq") for t in topics)
            consumer.subscribe(topics)
            messages = b"".join((m.key or b"") + (m.value or b"") for m in consumer)
        finally:
            consumer.close()
        assert messages
        for secret in secrets:
            for where, text in (("logs", logs), ("database", database_dump),
                                ("topics", messages.decode(errors="replace"))):
                assert secret[:12] not in text, f"API key found in {where}"
        assert orjson.loads(b"{}") == {}
