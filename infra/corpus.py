"""The demo's corpus: real English text that every CPython installation carries offline.

Why this text: the quick start must work with no network and no data download, and searching it
must be visibly meaningful. CPython ships two such sources:

* ``pydoc_data.topics.topics``: the language reference sections that ``help("FOR")`` shows
  (statements, operators, data model, ...), about eighty long documents;
* the docstrings of the standard-library modules, their public classes and functions: hundreds
  of documents, from ``json`` to ``asyncio.TaskGroup``.

Docstrings are read with :mod:`ast` from the library's ``.py`` files, never by importing the
modules: importing ``antigravity`` opens a web browser, ``this`` prints a poem, and GUI modules
may fail on a headless machine. The order is deterministic, so ``--documents 40`` loads the same
forty documents on every machine running the same Python.
"""

from __future__ import annotations

import ast
import inspect
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Docstrings shorter than this say too little to be worth a search hit ("Return self.").
MIN_MODULE_DOC = 200
MIN_MEMBER_DOC = 400

#: Packages and modules whose text is test data, demos, or generated tables, not documentation.
_SKIPPED_PREFIXES = ("test", "idlelib", "lib2to3", "turtledemo", "ensurepip", "pydoc_data",
                     "tkinter", "this", "antigravity", "__")


@dataclass(frozen=True, slots=True)
class Document:
    """One row of the demo's ``blog_posts`` table."""

    title: str
    content: str
    source: str  # where the text comes from, for the demo's explanation


def reference_topics() -> list[Document]:
    """The language reference help topics (``help("with")``), sorted by topic name."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data; the docstrings still suffice
        return []
    return [Document(f"Language reference: {name}", _clean(text), "pydoc_data.topics")
            for name, text in sorted(topics.items()) if len(text.strip()) >= MIN_MODULE_DOC]


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, source path) of the standard library's public ``.py`` modules."""
    root = _stdlib_dir()
    public = {name for name in sys.stdlib_module_names if not name.startswith("_")}
    for top in sorted(public):
        if top.startswith(_SKIPPED_PREFIXES):
            continue
        package = root / top
        if (package / "__init__.py").is_file():
            for path in sorted(package.rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if any(p.startswith(("_", "test")) for p in parts[1:]) and path.name != "__init__.py":
                    continue
                if "tests" in parts or "test" in parts:
                    continue
                name = ".".join(parts[:-1] if path.name == "__init__.py" else parts)
                yield name, path
        elif (root / f"{top}.py").is_file():
            yield top, root / f"{top}.py"


def _clean(text: str) -> str:
    return inspect.cleandoc(text).strip()


def docstring_documents() -> list[Document]:
    """Module docstrings first (one per module), then long public class and function docstrings."""
    modules: list[Document] = []
    members: list[Document] = []
    for name, path in _module_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        doc = ast.get_docstring(tree)
        if doc and len(doc) >= MIN_MODULE_DOC:
            modules.append(Document(f"Module {name}", _clean(doc), f"{name} docstring"))
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_"):
                continue
            member_doc = ast.get_docstring(node)
            if member_doc and len(member_doc) >= MIN_MEMBER_DOC:
                members.append(Document(f"{name}.{node.name}", _clean(member_doc),
                                        f"{name}.{node.name} docstring"))
    return modules + members


def load_corpus(limit: int | None = None) -> list[Document]:
    """Up to ``limit`` documents: reference topics and module docs interleaved, then members.

    Interleaving keeps a small demo (``--documents 40``) varied: half language reference, half
    library modules, instead of forty sections about operators.
    """
    topics = reference_topics()
    docs = docstring_documents()
    modules = [d for d in docs if d.title.startswith("Module ")]
    members = [d for d in docs if not d.title.startswith("Module ")]
    mixed: list[Document] = []
    for i in range(max(len(topics), len(modules))):
        mixed.extend(seq[i] for seq in (topics, modules) if i < len(seq))
    mixed.extend(members)
    return mixed if limit is None else mixed[:limit]


def describe_corpus() -> str:
    """One sentence saying where the text comes from, for the demo output and the README."""
    return (f"the Python {sys.version_info.major}.{sys.version_info.minor} standard library's own "
            "documentation (the language reference help topics in pydoc_data.topics and the "
            "docstrings of its modules, classes and functions), shipped with every CPython")
