"""Document parsers side by side: text quality and speed on real documents.

Usage: ``python bench/parsing.py FILE...`` (PDF, DOCX, HTML). Every candidate library that is
importable in the running interpreter is measured on every file of its format: seconds per
document, pages per second (PDF), and the word-level F1 of its text against a reference text
made by a tool outside the candidates: ``pdftotext`` (poppler-utils) for a PDF, ``pandoc -t
plain`` of ``<name>.html`` beside a DOCX (the DOCX was made from that HTML by pandoc) and of
the HTML itself. Words are compared as multisets of lower-cased alphanumeric runs, so markdown
markup neither helps nor hurts. Run it once per virtual environment whose libraries you want to
compare (pymupdf4llm, for instance, is what pgai uses, in pgai's environment).

The numbers chose the parsers of ``processors/parsing.py``; docs/documents.md has them.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

Parser = Callable[[bytes], str]
WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> collections.Counter[str]:
    return collections.Counter(WORD.findall(text.lower()))


def f1(candidate: str, reference: str) -> float:
    got, want = words(candidate), words(reference)
    common = sum((got & want).values())
    if not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def reference(path: Path) -> str:
    if path.suffix == ".pdf":
        return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True,
                              text=True).stdout
    html = path.with_suffix(".html")
    return subprocess.run(["pandoc", str(html), "-t", "plain"], capture_output=True, check=True,
                          text=True).stdout


def pdf_pages(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, check=True, text=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))  # type: ignore[union-attr]


def candidates() -> dict[str, dict[str, Parser]]:
    found: dict[str, dict[str, Parser]] = {"pdf": {}, "docx": {}, "html": {}}
    try:
        import pypdfium2

        def pdfium(data: bytes) -> str:
            pdf = pypdfium2.PdfDocument(data)
            try:
                return "\n\n".join(page.get_textpage().get_text_bounded() for page in pdf)
            finally:
                pdf.close()
        found["pdf"]["pypdfium2"] = pdfium
    except ImportError:
        pass
    try:
        import io

        import pypdf

        def pypdf_text(data: bytes) -> str:
            return "\n\n".join(p.extract_text() or "" for p in pypdf.PdfReader(io.BytesIO(data)).pages)
        found["pdf"]["pypdf"] = pypdf_text
    except ImportError:
        pass
    try:
        import io

        from pdfminer.high_level import extract_text
        found["pdf"]["pdfminer.six"] = lambda data: extract_text(io.BytesIO(data))
    except ImportError:
        pass
    try:
        import pymupdf
        import pymupdf4llm

        def mupdf4llm(data: bytes) -> str:
            with pymupdf.open(stream=data, filetype="pdf") as doc:
                return str(pymupdf4llm.to_markdown(doc, show_progress=False))

        def mupdf_text(data: bytes) -> str:
            with pymupdf.open(stream=data, filetype="pdf") as doc:
                return "\n\n".join(page.get_text() for page in doc)
        found["pdf"]["pymupdf4llm (pgai)"] = mupdf4llm
        found["pdf"]["pymupdf get_text"] = mupdf_text
    except ImportError:
        pass
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from processors import parsing

        found["pdf"]["processors.parsing"] = lambda data: parsing.parse_pdf(data)
        found["docx"]["processors.parsing"] = lambda data: parsing.parse_docx(data)
        found["html"]["processors.parsing"] = lambda data: parsing.parse_html(parsing.Document(data))
    except ImportError:
        pass
    try:
        import io

        import mammoth
        found["docx"]["mammoth (markdown)"] = lambda data: mammoth.convert_to_markdown(io.BytesIO(data)).value
    except ImportError:
        pass
    try:
        import io

        from docx2python import docx2python

        def d2p(data: bytes) -> str:
            with docx2python(io.BytesIO(data)) as doc:
                return str(doc.text)
        found["docx"]["docx2python"] = d2p
    except ImportError:
        pass
    try:
        import markdownify
        found["html"]["markdownify"] = lambda data: markdownify.markdownify(data.decode("utf-8", "replace"))
    except ImportError:
        pass
    try:
        import html_to_markdown
        found["html"]["html-to-markdown"] = lambda data: html_to_markdown.convert(
            data.decode("utf-8", "replace")).content
    except ImportError:
        pass
    return found


def main(paths: list[str]) -> None:
    found = candidates()
    print(f"{'file':32} {'parser':24} {'s/doc':>8} {'pages/s':>8} {'F1':>6}")
    for name in paths:
        path = Path(name)
        kind = path.suffix.lstrip(".")
        data = path.read_bytes()
        ref = reference(path)
        for label, parse in found.get(kind, {}).items():
            try:
                start = time.perf_counter()
                text = parse(data)
                seconds = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001  # a bench reports every candidate's failure
                print(f"{path.name:32} {label:24} failed: {type(exc).__name__}: {exc}")
                continue
            pages = f"{pdf_pages(path) / seconds:8.1f}" if kind == "pdf" else f"{'':8}"
            print(f"{path.name:32} {label:24} {seconds:8.3f} {pages} {f1(text, ref):6.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
