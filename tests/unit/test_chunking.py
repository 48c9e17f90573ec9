"""Our splitters must return exactly what LangChain returns for the same settings.

pgai chunks through LangChain; equality is the contract (same chunks, same ``chunk_seq``). The
corpus is real prose and code documentation that ships with Python and the installed packages:
standard-library docstrings, the Zen of Python, and licence texts found in site-packages.
"""

from __future__ import annotations

import codecs
import importlib
import pathlib
import sys
import sysconfig
from types import SimpleNamespace

import pytest

from processors.chunking import (
    ChunkingError,
    chunker_for,
    split_character,
    split_recursive,
)

lc = pytest.importorskip("langchain_text_splitters")

_STDLIB_MODULES = [
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum",
    "fractions", "functools", "gettext", "glob", "heapq", "hmac", "html", "http", "imaplib", "inspect",
    "ipaddress", "itertools", "json", "logging", "mailbox", "operator", "optparse", "os", "pathlib",
    "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "smtplib",
    "socket", "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "typing", "unittest", "urllib", "uuid", "warnings",
    "weakref", "xml", "zipfile", "zoneinfo",
]


def _corpus() -> list[str]:
    texts: list[str] = [codecs.decode(importlib.import_module("this").s, "rot13")]
    for name in _STDLIB_MODULES:
        module = importlib.import_module(name)
        if module.__doc__:
            texts.append(module.__doc__)
        for attr in sorted(vars(module))[:40]:
            doc = getattr(getattr(module, attr), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200:
                texts.append(doc)
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    licences = sorted(site.glob("*.dist-info/LICEN[CS]E*")) + sorted(
        site.glob("*.dist-info/licenses/*")
    )
    for path in licences[:40]:
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    stdlib_licence = pathlib.Path(
        sys.prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "LICENSE.txt"
    )
    if stdlib_licence.is_file():
        texts.append(stdlib_licence.read_text(encoding="utf-8"))
    texts += ["", " ", "\n\n", "a", "no separators at all in this one", "x" * 3000]
    return texts


CORPUS = _corpus()


def test_corpus_is_real_and_large() -> None:
    assert len(CORPUS) > 300
    assert sum(map(len, CORPUS)) > 300_000


RECURSIVE_SETTINGS = [
    # (separators, chunk_size, chunk_overlap, is_separator_regex)
    (["\n\n", "\n", ".", "?", "!", " ", ""], 800, 400, False),  # pgai's defaults
    (["\n\n", "\n", ".", "?", "!", " ", ""], 200, 0, False),
    (["\n\n", "\n", ".", "?", "!", " ", ""], 2000, 100, False),
    ([".", " "], 800, 400, False),  # the design brief's example
    ([".", " "], 60, 20, False),
    (["\n\n", "\n", " ", ""], 50, 10, False),
    (["\n\n", "\n", " ", ""], 10, 0, False),
    (["\n\n", "\n", " ", ""], 5000, 0, False),
    (["\n"], 100, 50, False),  # no empty fallback: over-long pieces stay whole
    ([r"\n\s*\n", r"(?<=[.!?])\s+", r"\s+", ""], 300, 50, True),
    ([r"[.;:]", r"\s", ""], 120, 30, True),
    ([r"(?=\n[A-Z])", r"\n", " "], 250, 0, True),
    ([], 400, 40, False),  # empty list -> LangChain's default separators
]


@pytest.mark.parametrize("separators,size,overlap,regex", RECURSIVE_SETTINGS)
def test_recursive_matches_langchain(
    separators: list[str], size: int, overlap: int, regex: bool
) -> None:
    reference = lc.RecursiveCharacterTextSplitter(
        separators=separators,
        chunk_size=size,
        chunk_overlap=overlap,
        is_separator_regex=regex,
        length_function=len,
    )
    for text in CORPUS:
        ours = split_recursive(
            text,
            separators=separators,
            chunk_size=size,
            chunk_overlap=overlap,
            is_separator_regex=regex,
        )
        assert ours == reference.split_text(text)


CHARACTER_SETTINGS = [
    # (separator, chunk_size, chunk_overlap, is_separator_regex)
    ("\n\n", 800, 400, False),  # pgai's defaults
    ("\n\n", 200, 0, False),
    ("\n", 100, 30, False),
    (" ", 40, 10, False),
    (".", 500, 0, False),
    ("", 50, 5, False),  # empty separator splits into characters
    (r"\s+", 80, 20, True),
    (r"[.!?]\s", 300, 100, True),
    (r"(?<=\.)\s", 150, 0, True),  # look-behind: never re-inserted
    (r"(?=\n\n)", 400, 50, True),  # look-ahead: never re-inserted
    ("a.c", 100, 0, False),  # regex metacharacters escaped when not a regex
]


@pytest.mark.parametrize("separator,size,overlap,regex", CHARACTER_SETTINGS)
def test_character_matches_langchain(separator: str, size: int, overlap: int, regex: bool) -> None:
    reference = lc.CharacterTextSplitter(
        separator=separator,
        chunk_size=size,
        chunk_overlap=overlap,
        is_separator_regex=regex,
        length_function=len,
    )
    for text in CORPUS:
        ours = split_character(
            text,
            separator=separator,
            chunk_size=size,
            chunk_overlap=overlap,
            is_separator_regex=regex,
        )
        assert ours == reference.split_text(text)


def _config(implementation: str, **fields: object) -> SimpleNamespace:
    try:
        from pgai_orm import configuration
    except ImportError:
        return SimpleNamespace(implementation=implementation, **fields)
    recursive = configuration.ChunkingRecursiveCharacterTextSplitterConfig
    classes = {
        "character_text_splitter": configuration.ChunkingCharacterTextSplitterConfig,
        "recursive_character_text_splitter": recursive,
        "none": configuration.ChunkingNoneConfig,
    }
    return classes[implementation](**fields)


def test_chunker_for_recursive_config_matches_pgai_usage() -> None:
    config = _config(
        "recursive_character_text_splitter",
        chunk_column="content",
        chunk_size=800,
        chunk_overlap=400,
        separators=[".", " "],
        is_separator_regex=False,
    )
    chunk = chunker_for(config)
    reference = lc.RecursiveCharacterTextSplitter(
        separators=[".", " "], chunk_size=800, chunk_overlap=400
    )
    for text in CORPUS[:50]:
        assert chunk(text) == reference.split_text(text)


def test_chunker_for_character_config() -> None:
    config = _config(
        "character_text_splitter",
        chunk_column="content",
        chunk_size=100,
        chunk_overlap=10,
        separator="\n",
        is_separator_regex=False,
    )
    text = "first line\nsecond line\n" * 20
    assert chunker_for(config)(text) == lc.CharacterTextSplitter(
        separator="\n", chunk_size=100, chunk_overlap=10
    ).split_text(text)


@pytest.mark.parametrize(
    "implementation,fields",
    [
        ("recursive_character_text_splitter", {"chunk_column": "c"}),
        ("character_text_splitter", {"chunk_column": "c"}),
        ("none", {}),
    ],
)
def test_null_and_empty_text_give_no_chunks(implementation: str, fields: dict[str, object]) -> None:
    chunk = chunker_for(_config(implementation, **fields))
    assert chunk(None) == []
    assert chunk("") == []


def test_none_chunking_returns_whole_text() -> None:
    text = "whole\n\ntext, untouched  "
    assert chunker_for(_config("none"))(text) == [text]


def test_bad_settings_fail_when_the_chunker_is_built() -> None:
    bad_overlap = SimpleNamespace(
        implementation="recursive_character_text_splitter", chunk_size=10, chunk_overlap=20
    )
    with pytest.raises(ChunkingError, match="chunk_overlap"):
        chunker_for(bad_overlap)
    bad_regex = SimpleNamespace(
        implementation="character_text_splitter",
        chunk_size=10,
        chunk_overlap=0,
        separator="(",
        is_separator_regex=True,
    )
    with pytest.raises(ChunkingError, match="regular expression"):
        chunker_for(bad_regex)
    with pytest.raises(ChunkingError, match="implementation"):
        chunker_for(SimpleNamespace(implementation="sentences"))
