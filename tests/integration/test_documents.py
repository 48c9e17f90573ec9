"""Documents behind URIs (``LoadingUriConfig``) and in bytea columns, end to end.

Real servers, started here: a local HTTP server (http.server) and a local S3-compatible server
(moto's server mode, spoken to with boto3 over HTTP: the worker's boto3 reaches it through
the standard ``AWS_ENDPOINT_URL``). The documents are real ones made by tests/fixtures (a
multi-page PDF, a DOCX, an HTML page). The worker runs as its own process; the bytea test runs
the connector too, since it is the connector that puts the bytes on the topic.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from psycopg import sql

from infra.faults import Pipeline, migration
from pgai_orm.configuration import (
    ChunkingRecursiveCharacterTextSplitterConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    LoadingColumnConfig,
    LoadingUriConfig,
    ParsingNoneConfig,
    ParsingPymupdfConfig,
    VectorizerConfig,
)
from tests.fake_providers.openai_server import FakeOpenAIServer
from tests.fixtures.documents import make_docx, make_html, make_pdf
from tests.support.vectorizers import create_vectorizer, install_catalog
from tests.support.worker import Source, wait_for, worker

pytestmark = pytest.mark.integration

KEY_ENV = "DOCUMENTS_TEST_OPENAI_KEY"
LIMIT = 60_000  # VECTORIZER_MAX_DOCUMENT_BYTES for these tests: "a 200 MB file", scaled down

PDF = make_pdf([["Chapter one: replication slots keep WAL."],
                ["Chapter two: the connector confirms LSNs."],
                ["Chapter three: workers embed chunks."]])
PDF_V2 = make_pdf([["Revised edition: publications name tables."]])
DOCX = make_docx("Runbook", ["Restart the worker after an upgrade."],
                 bullets=["drain the topic"], table=[["step", "owner"], ["backup", "dba"]])
HTML = make_html("Changelog", ["Documents are parsed by type."])


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    fail_first: int = 0  # answer 503 this many times first
    stall: bool = False  # never answer in time
    hits: int = 0


@dataclass
class HttpServer:
    """http.server with fixed routes; counts each route's requests."""

    routes: dict[str, Route] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server names it
                route = owner.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route.hits += 1
                if route.stall:
                    owner.release.wait(20)
                if route.hits <= route.fail_first:
                    self.send_error(503)
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3() -> Iterator[tuple[str, Any]]:
    """moto's S3-compatible server on a local port, and a boto3 client of it."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture
def database(fresh_database_url: str) -> str:
    install_catalog(fresh_database_url)
    return fresh_database_url


def config(base_url: str, **parts: Any) -> dict[str, Any]:
    return VectorizerConfig(
        embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=64,
                                        api_key_name=KEY_ENV, base_url=base_url),
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(chunk_size=200, chunk_overlap=0),
        formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
        **parts,
    ).to_dict()


def document_source(url: str, servers: str, cfg: dict[str, Any], column: str = "uri text",
                    prefix: str | None = None) -> Source:
    table = f"docs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, views int, {})")
                     .format(sql.Identifier(table), sql.SQL(column)))
    vectorizer_id = create_vectorizer(url, table, cfg)
    source = Source(url, servers, table, prefix or f"d{uuid.uuid4().hex[:6]}", vectorizer_id,
                    cfg, 1)
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(source.topic, 1, 1)])
    finally:
        admin.close()
    return source


def chunks_of(source: Source) -> dict[int, str]:
    out: dict[int, str] = {}
    for id_, _seq, chunk, _vector in source.store_rows():
        out[id_] = out.get(id_, "") + chunk + "\n"
    return out


def errors_of(source: Source) -> dict[int, tuple[str, str, dict[str, Any]]]:
    return {pk["id"]: (step, message, details) for pk, step, message, details in source.sql(
        "SELECT pk, step, message, details FROM vectorizer.errors WHERE vectorizer_id = %s"
        " AND pk IS NOT NULL", (source.vectorizer_id,))}


def applied(source: Source) -> dict[int, int]:
    return {pk["id"]: int(lsn) for pk, lsn in source.sql(
        "SELECT pk, (lsn - '0/0'::pg_lsn)::bigint FROM vectorizer.applied_state"
        " WHERE vectorizer_id = %s", (source.vectorizer_id,))}


def test_documents_behind_uris(database: str, kafka_bootstrap_servers: str, tmp_path: Path,
                               s3: tuple[str, Any]) -> None:
    endpoint, client = s3
    client.create_bucket(Bucket="docs")
    client.put_object(Bucket="docs", Key="manual.pdf", Body=PDF, ContentType="application/pdf")
    client.put_object(Bucket="docs", Key="notes/readme.md", Body=b"# Readme\n\nS3 markdown body.")
    (tmp_path / "local.pdf").write_bytes(PDF)
    (tmp_path / "guide.md").write_text("# Guide\n\nA local markdown file.")
    http = HttpServer({
        "/book.pdf": Route(PDF, content_type="application/pdf"),
        "/runbook": Route(DOCX),  # no extension, octet-stream: the bytes say DOCX
        "/changelog.html": Route(HTML, content_type="text/html; charset=utf-8"),
        "/secret.pdf": Route(b"", status=403),
        "/flaky.pdf": Route(PDF, content_type="application/pdf", fail_first=2),
        "/slow.pdf": Route(PDF, stall=True),
        "/huge.pdf": Route(b"%PDF-1.4\n" + b"0" * (LIMIT + 1), content_type="application/pdf"),
        "/photo": Route(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, content_type="image/png"),
        "/broken.pdf": Route(PDF[: len(PDF) // 2], content_type="application/pdf"),
    })
    rows = {
        1: str(tmp_path / "local.pdf"),
        2: (tmp_path / "guide.md").as_uri(),
        3: http.url("/book.pdf"),
        4: http.url("/runbook"),
        5: http.url("/changelog.html"),
        6: "s3://docs/manual.pdf",
        7: "s3://docs/notes/readme.md",
        8: "s3://docs/missing.pdf",
        9: http.url("/secret.pdf", userinfo="alice:hunter2@") + "?token=abc123",
        10: http.url("/flaky.pdf"),
        11: http.url("/slow.pdf"),
        12: http.url("/huge.pdf"),
        13: http.url("/photo"),
        14: http.url("/broken.pdf"),
        15: "ftp://example.invalid/x.pdf",
    }
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "VECTORIZER_S3_ADDRESSING_STYLE": "path", "VECTORIZER_MAX_DOCUMENT_BYTES": str(LIMIT),
           "VECTORIZER_LOAD_TIMEOUT_S": "1", "VECTORIZER_LOAD_BACKOFF_S": "0.05"}
    try:
        with FakeOpenAIServer() as provider:
            env[KEY_ENV] = provider.api_key
            source = document_source(database, kafka_bootstrap_servers,
                                     config(provider.base_url, loading=LoadingUriConfig("uri", retries=2)))
            # a second vectorizer served by the same worker: S3 through an assumed role
            role = document_source(database, kafka_bootstrap_servers, config(
                provider.base_url, loading=LoadingUriConfig(
                    "uri", aws_role_arn="arn:aws:iam::123456789012:role/reader")),
                prefix=source.prefix)
            for id_, uri in rows.items():
                source.upsert(id_, title=f"doc {id_}", uri=uri)
            role.upsert(1, title="via role", uri="s3://docs/manual.pdf")
            source.flush()
            role.flush()
            with worker(source, env=env):
                wait_for(lambda: len(applied(source)) == len(rows) and len(applied(role)) == 1,
                         "every document row to be applied", timeout=120)
                chunks, errors = chunks_of(source), errors_of(source)
                assert set(chunks) == {1, 2, 3, 4, 5, 6, 7, 10}, errors
                for id_ in (1, 3, 6, 10):  # every page of the PDF, in order
                    text = chunks[id_]
                    assert text.index("Chapter one") < text.index("Chapter two") < text.index(
                        "Chapter three"), text
                assert "A local markdown file." in chunks[2]
                assert "# Runbook" in chunks[4] and "| backup | dba |" in chunks[4]
                assert "Documents are parsed by type." in chunks[5] and "script" not in chunks[5]
                assert "S3 markdown body." in chunks[7]
                assert "Chapter two" in chunks_of(role)[1]
                assert http.routes["/flaky.pdf"].hits == 3  # two 503s, retried, then the PDF

                assert {i: e[0] for i, e in errors.items()} == {i: "load" for i in range(8, 16)
                                                                if i != 10}
                expected = {
                    8: r"^load s3://docs/missing\.pdf: no such object$",
                    9: r"^load http://127\.0\.0\.1:\d+/secret\.pdf\?…: HTTP 403 access denied$",
                    11: r"^load http://.*/slow\.pdf: timed out after 1 s .*\(after 3 attempts\)$",
                    12: rf"^load http://.*/huge\.pdf: the document is {LIMIT + 10} bytes, over the "
                        rf"limit of {LIMIT} bytes \(VECTORIZER_MAX_DOCUMENT_BYTES\)$",
                    13: r"^parse http://.*/photo: unsupported document type: a PNG image",
                    14: r"^parse http://.*/broken\.pdf: not a readable PDF",
                    15: r"^load ftp://example\.invalid/x\.pdf: unsupported URI scheme 'ftp'",
                }
                for id_, pattern in expected.items():
                    assert re.match(pattern, errors[id_][1]), (id_, errors[id_])
                assert "hunter2" not in str(errors) and "abc123" not in str(errors)
                assert errors[9][2]["status"] == 403 and errors[11][2]["attempts"] == 3
                assert http.routes["/secret.pdf"].hits == 1  # a 403 is not retried

                # the same document again (a column the vectorizer does not read): re-loaded,
                # every chunk hash known, so no embedding and the store unchanged
                calls, store = len(provider.embedding_requests()), source.store_rows()
                source.upsert(6, op="update", views=1)
                source.flush()
                wait_for(lambda: applied(source)[6] == source.lsn, "the touched row")
                assert len(provider.embedding_requests()) == calls
                assert source.store_rows() == store

                # the object behind an unchanged URI changed: touching the row re-loads it
                client.put_object(Bucket="docs", Key="manual.pdf", Body=PDF_V2)
                source.upsert(6, op="update", views=2)
                # a changed URI re-loads; a fixed one clears the row's error
                source.upsert(3, op="update", uri="s3://docs/notes/readme.md")
                source.upsert(8, op="update", uri="s3://docs/manual.pdf")
                source.flush()
                wait_for(lambda: "Revised edition" in chunks_of(source).get(6, "")
                         and "S3 markdown body." in chunks_of(source).get(3, "")
                         and 8 in chunks_of(source), "re-loaded documents")
                assert "Chapter one" not in chunks_of(source)[6]
                assert 8 not in errors_of(source)
    finally:
        http.close()


def test_catalog_checks_column_types(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE typed (id int PRIMARY KEY, n int, body text, file bytea)")
    parts = VectorizerConfig(
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(), loading=LoadingUriConfig("n"))
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="LoadingUriConfig reads a URI"):
        create_vectorizer(database, "typed", parts)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="ParsingNoneConfig cannot read"):
        create_vectorizer(database, "typed", VectorizerConfig(
            chunking=ChunkingRecursiveCharacterTextSplitterConfig(),
            loading=LoadingColumnConfig("file"), parsing=ParsingNoneConfig()))
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="parsing pymupdf needs a document"):
        create_vectorizer(database, "typed", VectorizerConfig(
            chunking=ChunkingRecursiveCharacterTextSplitterConfig(),
            loading=LoadingColumnConfig("body"), parsing=ParsingPymupdfConfig()))
    # a valid one; a new parsing config is a new version (what gets embedded changes)
    create_vectorizer(database, "typed", VectorizerConfig(
        chunking=ChunkingRecursiveCharacterTextSplitterConfig(), loading=LoadingUriConfig("body")),
        name="typed_docs")
    migration(database, lambda op: op.alter_vectorizer("typed_docs", parsing=ParsingNoneConfig()))
    with psycopg.connect(database) as conn:
        versions = conn.execute("SELECT version, config->'parsing' FROM vectorizer.config_versions"
                                " ORDER BY version").fetchall()
    assert versions == [(1, {"implementation": "auto"}), (2, {"implementation": "none"})]
    with pytest.raises(Exception, match="ParsingNoneConfig cannot read"):
        migration(database, lambda op: op.alter_vectorizer(
            "typed_docs", loading=LoadingColumnConfig("file")))


def test_documents_in_a_bytea_column(database: str, kafka_bootstrap_servers: str,
                                     tmp_path: Path) -> None:
    """Connector and worker: the bytes travel as base64 in the events; a bytea value that
    arrives as unchanged TOAST is re-read (as hex) when a template column changes."""
    with FakeOpenAIServer() as provider:
        cfg = config(provider.base_url, loading=LoadingColumnConfig("file"))
        table = f"files_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, file bytea)")
                         .format(sql.Identifier(table)))
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN file SET STORAGE EXTERNAL")
                         .format(sql.Identifier(table)))
            big = make_pdf([[f"Line {i} of a long report about vacuum."] * 40 for i in range(8)])
            rows = [(1, "report", PDF), (2, "runbook", DOCX), (3, "page", HTML),
                    (4, "corrupt", PDF[:300]), (5, "big", big)]
            with conn.cursor() as cur:
                cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)")
                                .format(sql.Identifier(table)), rows)
        vectorizer_id = create_vectorizer(database, table, cfg)
        pipeline = Pipeline(database, kafka_bootstrap_servers, "public", table, vectorizer_id, cfg,
                            f"b{uuid.uuid4().hex[:6]}", tmp_path, env={KEY_ENV: provider.api_key},
                            partitions=1)
        source = Source(database, kafka_bootstrap_servers, table, pipeline.prefix, vectorizer_id,
                        cfg, 1)
        pipeline.start()
        try:
            wait_for(lambda: len(applied(source)) == 5, "the five files", timeout=120)
            chunks = chunks_of(source)
            assert "Chapter three" in chunks[1] and "| step | owner |" in chunks[2]
            assert "Documents are parsed by type." in chunks[3]
            assert "Line 7 of a long report" in chunks[5]
            step, message, _ = errors_of(source)[4]
            assert step == "load" and message.startswith("parse: not a readable PDF: "), message
            # title changes, file arrives as unchanged TOAST: re-read by key, same chunks
            calls = len(provider.embedding_requests())
            before = applied(source)[5]
            source.sql(sql.SQL("UPDATE {} SET title = 'big v2' WHERE id = 5")
                       .format(sql.Identifier(table)).as_string())
            wait_for(lambda: applied(source)[5] > before, "the title update")
            assert "Line 7 of a long report" in chunks_of(source)[5]
            assert len(provider.embedding_requests()) > calls  # the title is in the template
        finally:
            pipeline.stop()
