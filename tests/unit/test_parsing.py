"""processors.parsing and the offline parts of processors.loading: formats found from bytes,
content type and name; each parser on a real document made by tests/fixtures; every bad
input a one-line ParsingError or LoadError; URIs redacted before they reach a message."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import sys
from pathlib import Path

import pytest

from processors.loading import LoadError, LoadSettings, decode_bytea, fetch_file, redact_uri
from processors.parsing import Document, ParsingError, detect_format, parse
from tests.fixtures.documents import make_docx, make_html, make_pdf

PDF = make_pdf([["Streaming replication keeps replicas current.", "A second line."],
                ["Page two talks about logical decoding."],
                ["Page three ends with pgoutput."]])
DOCX = make_docx("Operations guide", ["Start the connector first.", "Then the worker."],
                 bullets=["check the slot", "check the lag"],
                 table=[["setting", "value"], ["wal_level", "logical"]])
HTML = make_html("Release notes", ["Version two adds documents.", "Parsing is automatic."])


@pytest.mark.parametrize("doc, expected", [
    (Document(PDF), "pdf"),
    (Document(DOCX), "docx"),
    (Document(HTML), "html"),
    (Document(b"# Title\n\nbody", name="notes.md"), "markdown"),
    (Document(b"plain words"), "text"),
    (Document(b"# x", content_type="text/markdown; charset=utf-8"), "markdown"),
    (Document(b"<p>x</p>", name="https://h/page.HTM?x=1"), "html"),
    # the bytes win over a wrong name or content type
    (Document(PDF, name="misnamed.txt", content_type="text/plain"), "pdf"),
])
def test_formats(doc: Document, expected: str) -> None:
    assert detect_format(doc) == expected


@pytest.mark.parametrize("data, message", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "a PNG image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 20, "legacy Office"),
    (b"PK\x03\x04" + b"\0" * 40, "not a DOCX"),
    (b"\x00\x01\x02binary", "binary data of no known format"),
])
def test_unsupported_types_are_named(data: bytes, message: str) -> None:
    with pytest.raises(ParsingError, match=f"^unsupported document type: .*{message}"):
        parse(Document(data), "auto")


def test_pdf_keeps_every_page_in_order() -> None:
    text = parse(Document(PDF), "auto")
    assert text.index("Streaming replication") < text.index("Page two") < text.index("Page three")
    assert text.count("\n\n") >= 2  # pages apart by a blank line: the splitter's first separator


def test_corrupt_and_empty_pdfs_fail_with_their_cause() -> None:
    with pytest.raises(ParsingError, match="^not a readable PDF"):
        parse(Document(PDF[: len(PDF) // 3]), "auto")
    with pytest.raises(ParsingError, match="^not a readable PDF"):
        parse(Document(b"not a pdf at all", name="report.pdf"), "auto")
    with pytest.raises(ParsingError, match="no text layer"):
        parse(Document(make_pdf([[]])), "auto")


def test_docx_is_markdown_in_document_order() -> None:
    text = parse(Document(DOCX), "auto")
    assert text.startswith("# Operations guide")
    assert "- check the slot" in text
    assert "| wal_level | logical |" in text
    assert text.index("Start the connector") < text.index("check the lag") < text.index("wal_level")


def test_html_drops_scripts_and_styles() -> None:
    text = parse(Document(HTML, content_type="text/html"), "auto")
    assert "# Release notes" in text and "Parsing is automatic." in text
    assert "script text" not in text and "color: red" not in text


def test_text_and_charsets() -> None:
    assert parse(Document("naïve café".encode("latin-1"), content_type="text/plain; charset=latin-1"),
                 "auto") == "naïve café"
    assert parse(Document(b"\xef\xbb\xbfwith BOM"), "auto") == "with BOM"
    with pytest.raises(ParsingError, match="^not UTF-8 text"):
        parse(Document(b"caf\xe9", name="x.txt"), "auto")


def test_parsing_none_and_text_columns() -> None:
    assert parse("text from a column", "auto") == "text from a column"
    assert parse("text from a column", "none") == "text from a column"
    assert parse(Document(b"# fetched markdown"), "none") == "# fetched markdown"
    with pytest.raises(ParsingError, match="^ParsingNoneConfig takes the document as UTF-8"):
        parse(Document(PDF[:200] + b"\xff\xfe"), "none")
    with pytest.raises(ParsingError, match="column holds text"):
        parse("text", "pymupdf")


@pytest.mark.skipif(importlib.util.find_spec("pymupdf") is not None, reason="pymupdf is installed")
def test_pymupdf_without_its_extra_names_the_extra() -> None:
    with pytest.raises(ParsingError, match=r"needs the 'pymupdf' extra.*AGPL"):
        parse(Document(PDF), "pymupdf")


@pytest.mark.skipif(importlib.util.find_spec("pymupdf") is None, reason="the pymupdf extra")
def test_pymupdf_parses_a_pdf() -> None:
    assert "Page two" in parse(Document(PDF), "pymupdf")


def test_pymupdf_missing_is_reported_even_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymupdf", None)  # import of a None entry raises ImportError
    with pytest.raises(ParsingError, match="pip install 'pg-stream-vectorizer\\[pymupdf\\]'"):
        parse(Document(PDF), "pymupdf")


@pytest.mark.parametrize("uri, shown", [
    ("https://user:secret@example.com:8443/docs/a.pdf?X-Amz-Signature=abc#p2",
     "https://example.com:8443/docs/a.pdf?…"),
    ("s3://bucket/key/report.pdf", "s3://bucket/key/report.pdf"),
    ("/srv/docs/a.pdf", "/srv/docs/a.pdf"),
    ("file:///srv/docs/a.pdf", "file:///srv/docs/a.pdf"),
])
def test_uris_lose_credentials_before_any_message(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_bytea_values_as_events_and_rereads_carry_them() -> None:
    assert decode_bytea(base64.b64encode(b"%PDF-1.4").decode()) == b"%PDF-1.4"
    assert decode_bytea("\\x255044462d") == b"%PDF-"
    with pytest.raises(ValueError):
        decode_bytea("not base64!")


def test_settings_from_the_environment() -> None:
    settings = LoadSettings.from_env({"VECTORIZER_MAX_DOCUMENT_BYTES": "1000",
                                      "VECTORIZER_LOAD_TIMEOUT_S": "2.5"})
    assert (settings.max_bytes, settings.timeout_s, settings.concurrency) == (1000, 2.5, 8)
    with pytest.raises(Exception, match="VECTORIZER_LOAD_TIMEOUT_S='soon' is not a number"):
        LoadSettings.from_env({"VECTORIZER_LOAD_TIMEOUT_S": "soon"})
    with pytest.raises(Exception, match="must be positive"):
        LoadSettings.from_env({"VECTORIZER_MAX_DOCUMENT_BYTES": "0"})


def test_files_size_limit_and_missing(tmp_path: Path) -> None:
    small = LoadSettings(max_bytes=100)
    (tmp_path / "a.txt").write_bytes(b"x" * 50)
    (tmp_path / "big.pdf").write_bytes(b"x" * 101)
    doc = asyncio.run(fetch_file((tmp_path / "a.txt").as_uri(), small))
    assert doc.data == b"x" * 50 and doc.extension == ".txt"
    with pytest.raises(LoadError, match="101 bytes, over the limit of 100 bytes .*MAX_DOCUMENT"):
        asyncio.run(fetch_file(str(tmp_path / "big.pdf"), small))
    with pytest.raises(LoadError, match="no such file"):
        asyncio.run(fetch_file(str(tmp_path / "gone.pdf"), small))
    with pytest.raises(LoadError, match="only local files"):
        asyncio.run(fetch_file("file://otherhost/x.pdf", small))
