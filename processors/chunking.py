"""Split a source column's text into chunks, the way pgai does.

pgai's vectorizer hands its chunking settings to LangChain's ``CharacterTextSplitter`` and
``RecursiveCharacterTextSplitter`` (``length_function=len``, whitespace stripped, no start index).
Users move vectorizers between pgai and this project, so a chunk here must be byte-for-byte the
chunk pgai would have stored: the same text is embedded and the same ``chunk_seq`` numbers come
out. The algorithm below is a re-implementation of those two classes, kept free of LangChain so
the processors do not pull ``langchain-core`` and its dependencies at run time;
``tests/unit/test_chunking.py`` proves equality against LangChain over a real corpus.

Two LangChain behaviours are kept on purpose because pgai inherits them:

* the character splitter drops its separator (``keep_separator=False``) and re-inserts it when
  merging, except for zero-width look-around regexes, which are never re-inserted;
* the recursive splitter keeps each separator at the *start* of the piece that follows it
  (``keep_separator=True``), so chunks may begin with ``"."`` or ``" "`` before stripping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pgai_orm.errors import VectorizerError

logger = logging.getLogger(__name__)

#: pgai's SQL defaults (``ai.chunking_character_text_splitter`` / ``..._recursive_...``).
DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 400
DEFAULT_SEPARATOR = "\n\n"
DEFAULT_SEPARATORS: tuple[str, ...] = ("\n\n", "\n", ".", "?", "!", " ", "")

KeepSeparator = bool | Literal["start", "end"]
Chunker = Callable[[str | None], list[str]]

_LOOKAROUND_PREFIXES = ("(?=", "(?<!", "(?<=", "(?!")


class ChunkingError(VectorizerError, ValueError):
    """A chunking setting that cannot work (raised when the chunker is built, not per row)."""


def _check_sizes(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size <= 0:
        raise ChunkingError(f"chunk_size: must be > 0, got {chunk_size}")
    if chunk_overlap < 0:
        raise ChunkingError(f"chunk_overlap: must be >= 0, got {chunk_overlap}")
    if chunk_overlap > chunk_size:
        raise ChunkingError(
            f"chunk_overlap: {chunk_overlap} is larger than chunk_size {chunk_size}"
        )


def _split_with_regex(text: str, pattern: str, keep_separator: KeepSeparator) -> list[str]:
    """Split on ``pattern``; with ``keep_separator`` glue each match to its neighbour piece."""
    if not pattern:
        pieces = list(text)
    elif keep_separator:
        parts = re.split(f"({pattern})", text)
        if keep_separator == "end":
            pieces = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        else:
            pieces = [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]
        if len(parts) % 2 == 0:
            pieces += parts[-1:]
        pieces = [*pieces, parts[-1]] if keep_separator == "end" else [parts[0], *pieces]
    else:
        pieces = re.split(pattern, text)
    return [p for p in pieces if p]


def _join(pieces: Sequence[str], separator: str) -> str | None:
    text = separator.join(pieces).strip()
    return text or None


def _merge_splits(
    splits: Sequence[str], separator: str, chunk_size: int, chunk_overlap: int
) -> list[str]:
    """Greedily pack pieces into chunks of at most ``chunk_size``, carrying ``chunk_overlap``."""
    sep_len = len(separator)
    chunks: list[str] = []
    current: list[str] = []
    total = 0
    for piece in splits:
        piece_len = len(piece)
        if total + piece_len + (sep_len if current else 0) > chunk_size:
            if total > chunk_size:
                logger.debug("chunk of %d chars exceeds chunk_size %d", total, chunk_size)
            if current:
                chunk = _join(current, separator)
                if chunk is not None:
                    chunks.append(chunk)
                while total > chunk_overlap or (
                    total + piece_len + (sep_len if current else 0) > chunk_size and total > 0
                ):
                    total -= len(current[0]) + (sep_len if len(current) > 1 else 0)
                    current = current[1:]
        current.append(piece)
        total += piece_len + (sep_len if len(current) > 1 else 0)
    chunk = _join(current, separator)
    if chunk is not None:
        chunks.append(chunk)
    return chunks


def split_character(
    text: str,
    *,
    separator: str = DEFAULT_SEPARATOR,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    is_separator_regex: bool = False,
) -> list[str]:
    """Split on one separator and merge pieces up to ``chunk_size`` (LangChain's splitter)."""
    _check_sizes(chunk_size, chunk_overlap)
    pattern = separator if is_separator_regex else re.escape(separator)
    splits = _split_with_regex(text, pattern, keep_separator=False)
    is_lookaround = is_separator_regex and separator.startswith(_LOOKAROUND_PREFIXES)
    merge_separator = "" if is_lookaround else separator
    return _merge_splits(splits, merge_separator, chunk_size, chunk_overlap)


def _split_recursive(
    text: str,
    separators: Sequence[str],
    chunk_size: int,
    chunk_overlap: int,
    is_separator_regex: bool,
) -> list[str]:
    chunks: list[str] = []
    separator = separators[-1]
    remaining: Sequence[str] = ()
    for i, candidate in enumerate(separators):
        pattern = candidate if is_separator_regex else re.escape(candidate)
        if not candidate:
            separator = candidate
            break
        if re.search(pattern, text):
            separator = candidate
            remaining = separators[i + 1 :]
            break
    pattern = separator if is_separator_regex else re.escape(separator)
    splits = _split_with_regex(text, pattern, keep_separator=True)

    good: list[str] = []
    for piece in splits:
        if len(piece) < chunk_size:
            good.append(piece)
            continue
        if good:
            chunks.extend(_merge_splits(good, "", chunk_size, chunk_overlap))
            good = []
        if remaining:
            chunks.extend(
                _split_recursive(piece, remaining, chunk_size, chunk_overlap, is_separator_regex)
            )
        else:
            chunks.append(piece)
    if good:
        chunks.extend(_merge_splits(good, "", chunk_size, chunk_overlap))
    return chunks


def split_recursive(
    text: str,
    *,
    separators: Sequence[str] | None = DEFAULT_SEPARATORS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    is_separator_regex: bool = False,
) -> list[str]:
    """Split on the first separator present, recursing into pieces still too long.

    An empty or missing ``separators`` falls back to LangChain's own default
    (``["\\n\\n", "\\n", " ", ""]``), as LangChain does, so a pgai config with ``separators: []``
    chunks identically.
    """
    _check_sizes(chunk_size, chunk_overlap)
    seps = list(separators) if separators else ["\n\n", "\n", " ", ""]
    return _split_recursive(text, seps, chunk_size, chunk_overlap, is_separator_regex)


def chunker_for(config: Any) -> Chunker:
    """Return ``text -> chunks`` for a chunking config (duck-typed on ``.implementation``).

    ``None`` or empty text yields no chunks (pgai stores no row for it); ``"none"`` chunking
    yields the whole text as its single chunk. Settings are validated here, once, so a bad
    config fails when the processor starts rather than on every row.
    """
    implementation = getattr(config, "implementation", None)
    if implementation == "none":
        return lambda text: [text] if text else []
    size = getattr(config, "chunk_size", DEFAULT_CHUNK_SIZE)
    overlap = getattr(config, "chunk_overlap", DEFAULT_CHUNK_OVERLAP)
    regex = bool(getattr(config, "is_separator_regex", False))
    _check_sizes(size, overlap)
    if implementation == "character_text_splitter":
        separator = getattr(config, "separator", DEFAULT_SEPARATOR)
        _check_regexes([separator] if regex else [])

        def chunk_character(text: str | None) -> list[str]:
            if not text:
                return []
            return split_character(
                text,
                separator=separator,
                chunk_size=size,
                chunk_overlap=overlap,
                is_separator_regex=regex,
            )

        return chunk_character
    if implementation == "recursive_character_text_splitter":
        separators = list(getattr(config, "separators", DEFAULT_SEPARATORS) or [])
        _check_regexes(separators if regex else [])

        def chunk_recursive(text: str | None) -> list[str]:
            if not text:
                return []
            return split_recursive(
                text,
                separators=separators,
                chunk_size=size,
                chunk_overlap=overlap,
                is_separator_regex=regex,
            )

        return chunk_recursive
    raise ChunkingError(f"implementation: unknown chunking implementation {implementation!r}")


def _check_regexes(patterns: Sequence[str]) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ChunkingError(
                f"separator: invalid regular expression {pattern!r}: {exc}"
            ) from exc
