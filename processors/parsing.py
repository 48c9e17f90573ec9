"""A loaded document -> the text that gets chunked: one parser per format.

The vectorizer's parsing config (``pgai_orm.configuration``: ``auto``, ``none``, ``pymupdf``)
picks the parser. ``auto`` finds the format from the document's first bytes (a PDF header, a
ZIP holding ``word/document.xml``), then its content type, then its name's extension, and
parses PDF, DOCX, HTML, Markdown and plain text. The libraries were chosen by measurement
(``bench/parsing.py``, numbers in docs/documents.md) and are permissively licensed:

* PDF: ``pypdfium2`` (Apache-2.0 / BSD-3-Clause; Google's PDFium): the text of each page, pages
  apart by a blank line. As good as PyMuPDF's text on the measured documents, ~10x faster
  than pypdf and pdfminer.six.
* DOCX: ``python-docx`` (MIT): paragraphs and tables in document order, headings as ``#``,
  list items as ``-``, tables as Markdown rows.
* HTML: ``html-to-markdown`` (MIT): Markdown, scripts and styles dropped; as good as
  markdownify and ~20x faster.
* Markdown and text: decoded, unchanged.

``pymupdf`` is pgai's parser (PyMuPDF + pymupdf4llm, AGPL-3.0): only with the ``pymupdf``
extra. Every import is lazy, so a worker that never sees a document never loads a parser.
Parsing is CPU work on bytes: callers run it in a thread (:func:`parse_in_thread`) so that the
worker's event loop keeps answering the broker.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pgai_orm.errors import VectorizerError

__all__ = ["Document", "ParsingError", "detect_format", "parse", "parse_in_thread"]

#: PDFium is not thread-safe: one document at a time in this process.
_PDFIUM_LOCK = threading.Lock()

_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_EXTENSIONS = {
    ".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
}
#: binary formats that are recognised only to say so in the error
_UNSUPPORTED_MAGIC = (
    (b"\x89PNG", "a PNG image (images are not OCRed)"),
    (b"\xff\xd8\xff", "a JPEG image (images are not OCRed)"),
    (b"GIF8", "a GIF image (images are not OCRed)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (.doc, .xls, .ppt); save it as DOCX"),
    (b"\x1f\x8b", "a gzip archive"),
)
_HTML_START = re.compile(rb"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)
_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_HEADING = re.compile(r"heading\s*(\d)", re.IGNORECASE)


class ParsingError(VectorizerError):
    """A document that cannot become text (unsupported type, corrupt file, missing extra).
    Permanent: the same bytes fail the same way, so it is never retried."""


@dataclass(frozen=True, slots=True)
class Document:
    """A document's bytes and what is known about them.

    ``name``: the URI it came from (credentials already removed), for its extension and the
    messages; empty for a ``bytea`` column. ``content_type``: as the server sent it, if any.
    """

    data: bytes
    name: str = ""
    content_type: str | None = None

    @property
    def mime(self) -> str | None:
        if not self.content_type:
            return None
        return self.content_type.split(";")[0].strip().lower() or None

    @property
    def charset(self) -> str | None:
        for part in (self.content_type or "").split(";")[1:]:
            key, _, value = part.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return None

    @property
    def extension(self) -> str:
        path = urlsplit(self.name).path if "://" in self.name else self.name
        return os.path.splitext(path)[1].lower()


def detect_format(doc: Document) -> str:
    """``pdf``, ``docx``, ``html``, ``markdown`` or ``text``; else :class:`ParsingError`.

    The bytes decide first (a server's content type or a file's name can be wrong), then the
    content type, then the extension; what is left is text if it decodes, HTML if it starts
    like HTML.
    """
    head = doc.data[:2048]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if _zip_holds(doc.data, "word/document.xml"):
            return "docx"
        raise ParsingError("unsupported document type: a ZIP archive that is not a DOCX "
                           "(XLSX, PPTX, EPUB and ODT are not parsed)")
    for magic, what in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise ParsingError(f"unsupported document type: {what}")
    mime = doc.mime
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    if doc.extension in _EXTENSIONS:
        return _EXTENSIONS[doc.extension]
    if _HTML_START.match(head):
        return "html"
    if b"\x00" in head:
        described = f" ({mime})" if mime and mime not in {"application/octet-stream",
                                                           "binary/octet-stream"} else ""
        raise ParsingError(f"unsupported document type: binary data of no known format{described}"
                           " (parsed: PDF, DOCX, HTML, Markdown, text)")
    return "text"


def parse(value: str | Document, implementation: str) -> str:
    """The text of one source value: a text column's string, or a loaded document.

    ``implementation`` is the parsing config's (``auto``, ``none``, ``pymupdf``).
    """
    if isinstance(value, str):
        if implementation in ("auto", "none"):
            return value
        raise ParsingError(f"parsing {implementation!r} parses documents, but the column holds "
                           "text: use a bytea column or LoadingUriConfig")
    if implementation == "none":
        try:
            return decode_text(value.data, value.charset)
        except ParsingError:
            raise ParsingError("ParsingNoneConfig takes the document as UTF-8 text and it is "
                               "not; use ParsingAutoConfig() to parse it") from None
    if implementation == "pymupdf":
        return parse_pymupdf(value)
    if implementation != "auto":
        raise ParsingError(f"parsing {implementation!r} is not supported by this worker")
    fmt = detect_format(value)
    return _PARSERS[fmt](value)


async def parse_in_thread(value: str | Document, implementation: str) -> str:
    """:func:`parse` off the event loop (a large PDF takes seconds)."""
    if isinstance(value, str):
        return parse(value, implementation)
    return await asyncio.to_thread(parse, value, implementation)


# --------------------------------------------------------------------------- the parsers


def parse_pdf(data: bytes) -> str:
    """Each page's text layer (pypdfium2), pages apart by a blank line."""
    import pypdfium2 as pdfium  # lazy: ~9 MB of PDFium, only for workers that parse PDFs

    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise ParsingError(f"not a readable PDF: {exc}") from None
        try:
            pages: list[str] = []
            for index in range(len(pdf)):
                page = pdf[index]
                textpage = page.get_textpage()
                try:
                    pages.append(textpage.get_text_bounded().replace("\r\n", "\n").strip())
                finally:
                    textpage.close()
                    page.close()
        finally:
            pdf.close()
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise ParsingError(f"the PDF's {len(pages)} page(s) have no text layer (scanned pages "
                           "are not OCRed)")
    return text


def parse_docx(data: bytes) -> str:
    """Paragraphs and tables in document order, as Markdown (python-docx)."""
    import docx  # lazy: python-docx and lxml
    from docx.opc.exceptions import PackageNotFoundError
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParsingError(f"not a readable DOCX: {exc}") from None
    blocks: list[str] = []
    for item in document.iter_inner_content():
        block = _paragraph(item) if isinstance(item, Paragraph) else _table(item)
        if block:
            blocks.append(block)
    return "\n\n".join(blocks)


def _paragraph(paragraph: Any) -> str:
    text = paragraph.text.strip()
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return f"# {text}"
    heading = _HEADING.match(style)
    if heading:
        return f"{'#' * max(1, min(6, int(heading.group(1))))} {text}"
    p_pr = paragraph._p.pPr  # list numbering lives in the paragraph properties
    if style.startswith("List") or (p_pr is not None and p_pr.numPr is not None):
        return f"- {text}"
    return str(text)


def _table(table: Any) -> str:
    rows = [[" ".join(cell.text.split()).replace("|", "\\|") for cell in row.cells]
            for row in table.rows]
    rows = [r for r in rows if any(r)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def parse_html(doc: Document) -> str:
    """Markdown of the page (html-to-markdown); the charset from the content type, a ``<meta
    charset>``, else UTF-8 (undecodable bytes replaced: pages in the wild are messy)."""
    import html_to_markdown  # lazy: a Rust extension

    charset = doc.charset
    if charset is None:
        match = _META_CHARSET.search(doc.data[:4096])
        charset = match.group(1).decode("ascii") if match else "utf-8"
    try:
        html = doc.data.decode(charset, errors="replace")
    except LookupError:
        html = doc.data.decode("utf-8", errors="replace")
    try:
        result = html_to_markdown.convert(html)
    except Exception as exc:  # noqa: BLE001  # the extension raises its own error classes
        raise ParsingError(f"not readable HTML: {type(exc).__name__}: {exc}") from None
    return str(result.content).strip()


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Markdown and plain text: the declared charset, else UTF-8 (a BOM is dropped)."""
    try:
        return data.decode(charset or "utf-8-sig")
    except (UnicodeDecodeError, LookupError):
        what = f"{charset} text" if charset else "UTF-8 text"
        raise ParsingError(f"not {what}; declare its charset in the Content-Type") from None


def parse_pymupdf(doc: Document) -> str:
    """pgai's ``parsing_pymupdf``: Markdown from PyMuPDF + pymupdf4llm (the ``pymupdf`` extra)."""
    try:
        import pymupdf  # the optional AGPL extra
        import pymupdf4llm
    except ImportError:
        raise ParsingError(
            "ParsingPymupdfConfig needs the 'pymupdf' extra on the worker: pip install "
            "'pg-stream-vectorizer[pymupdf]' (PyMuPDF is AGPL-3.0); or use ParsingAutoConfig()"
        ) from None
    fmt = _EXTENSIONS.get(doc.extension, "")
    if fmt in ("markdown", "text"):
        return decode_text(doc.data, doc.charset)
    filetype = "pdf" if b"%PDF-" in doc.data[:1024] else (doc.extension.lstrip(".") or "pdf")
    try:
        with pymupdf.open(stream=doc.data, filetype=filetype) as opened:
            return str(pymupdf4llm.to_markdown(opened, show_progress=False))
    except (RuntimeError, ValueError) as exc:  # pymupdf's FileDataError is a RuntimeError
        raise ParsingError(f"PyMuPDF cannot read it: {exc}") from None


def _zip_holds(data: bytes, member: str) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return member in archive.namelist()
    except zipfile.BadZipFile:
        return False


_PARSERS: dict[str, Callable[[Document], str]] = {
    "pdf": lambda doc: parse_pdf(doc.data),
    "docx": lambda doc: parse_docx(doc.data),
    "html": parse_html,
    "markdown": lambda doc: decode_text(doc.data, doc.charset),
    "text": lambda doc: decode_text(doc.data, doc.charset),
}
