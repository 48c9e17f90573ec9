"""The load step: a row's source value -> its text, for vectorizers with a loading config.

``LoadingColumnConfig`` on a text column passes the text on; on a ``bytea`` column the bytes
are a document. ``LoadingUriConfig``: the column holds a URI and the document is fetched, one
fetcher per scheme: a local path or ``file://`` (here), ``http(s)://`` (httpx, here),
``s3://`` (boto3, :mod:`processors.loading_s3`). A batch's documents are fetched concurrently;
a transient failure (timeout, connection refused, HTTP 5xx/408/429, S3 throttling) is tried
again up to the config's ``retries`` times with exponential backoff, a permanent one (missing
object, 401/403, over the size limit) is not. Then :mod:`processors.parsing` makes the text.
Every failure is one row's: it comes back as a :class:`LoadFailure` whose message names the
URI (user, password and query string removed) and the cause; the pipeline records it (step
``load``) and goes on with the other rows.

Limits come from the worker's environment (:class:`LoadSettings`), so one deployment sets
them for all its vectorizers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from psycopg import AsyncConnection

from pgai_orm.configuration import LoadingConfig, LoadingUriConfig, ParsingConfig
from pgai_orm.errors import VectorizerError
from pgai_orm.runtime.backoff import Backoff
from processors.parsing import Document, ParsingError, parse_in_thread

logger = logging.getLogger(__name__)

__all__ = ["LoadError", "LoadFailure", "LoadSettings", "Loader", "redact_uri"]

MIB = 1024 * 1024


def _env_number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> Any:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise VectorizerError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise VectorizerError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class LoadSettings:
    """How documents are fetched; each from an environment variable of the worker."""

    #: ``VECTORIZER_MAX_DOCUMENT_BYTES``: a larger document is a row error, not a download
    max_bytes: int = 50 * MIB
    #: ``VECTORIZER_LOAD_TIMEOUT_S``: per request (connect, and each read)
    timeout_s: float = 30.0
    #: ``VECTORIZER_LOAD_CONCURRENCY``: documents fetched at once per batch
    concurrency: int = 8
    #: ``VECTORIZER_LOAD_BACKOFF_S``: the wait before the first retry, doubling up to 30 s
    backoff_s: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LoadSettings:
        env = os.environ if env is None else env
        return cls(
            max_bytes=_env_number(env, "VECTORIZER_MAX_DOCUMENT_BYTES", cls.max_bytes, integer=True),
            timeout_s=_env_number(env, "VECTORIZER_LOAD_TIMEOUT_S", cls.timeout_s),
            concurrency=_env_number(env, "VECTORIZER_LOAD_CONCURRENCY", cls.concurrency, integer=True),
            backoff_s=_env_number(env, "VECTORIZER_LOAD_BACKOFF_S", cls.backoff_s),
        )


class LoadError(VectorizerError):
    """Fetching one document failed; ``transient`` says whether trying again may help."""

    def __init__(self, cause: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.transient = transient
        self.status = status


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """One row's load failure, as the pipeline records it (``vectorizer.errors``, step load)."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


def redact_uri(uri: str) -> str:
    """The URI without user, password, query and fragment: what error messages may show
    (a presigned URL's signature or a token in the query must not reach the errors table)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def too_large(size: int, limit: int) -> LoadError:
    return LoadError(f"the document is {size} bytes, over the limit of {limit} bytes "
                     "(VECTORIZER_MAX_DOCUMENT_BYTES)")


# --------------------------------------------------------------------------- fetchers


def _read_file(path: str, limit: int) -> bytes:
    target = Path(path)
    try:
        size = target.stat().st_size
        if size > limit:
            raise too_large(size, limit)
        with target.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise LoadError("no such file on the worker's machine") from None
    except IsADirectoryError:
        raise LoadError("is a directory, not a file") from None
    except PermissionError:
        raise LoadError("permission denied reading the file") from None
    if len(data) > limit:  # grew since stat
        raise too_large(len(data), limit)
    return data


async def fetch_file(uri: str, settings: LoadSettings) -> Document:
    """A plain path, or ``file:///path`` (``file://localhost/path`` too), read in a thread."""
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise LoadError(f"file URI names host {parts.netloc!r}; only local files can be read")
        path = unquote(parts.path)
    else:
        path = uri
    data = await asyncio.to_thread(_read_file, path, settings.max_bytes)
    return Document(data, name=path)


_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpFetcher:
    """``http(s)://`` with one httpx client per loader (connection reuse across a batch)."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import httpx  # lazy: only vectorizers with URIs need it

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_s), follow_redirects=True,
                max_redirects=5, headers={"User-Agent": "pg-stream-vectorizer"})
        return self._client

    async def fetch(self, uri: str) -> Document:
        import httpx

        limit = self.settings.max_bytes
        try:
            async with self._http().stream("GET", uri) as response:
                status = response.status_code
                if status >= 400:
                    reason = {401: "unauthorized", 403: "access denied", 404: "not found",
                              410: "gone"}.get(status, response.reason_phrase or "error")
                    raise LoadError(f"HTTP {status} {reason}", status=status,
                                    transient=status in _TRANSIENT_HTTP)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise too_large(int(declared), limit)
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise too_large(received, limit)
                    chunks.append(chunk)
                content_type = response.headers.get("content-type")
        except httpx.TimeoutException:
            raise LoadError(f"timed out after {self.settings.timeout_s:g} s "
                            "(VECTORIZER_LOAD_TIMEOUT_S)", transient=True) from None
        except httpx.TooManyRedirects:
            raise LoadError("too many redirects") from None
        except httpx.TransportError as exc:  # connection refused, reset, DNS
            raise LoadError(f"connection failed: {type(exc).__name__}: {exc}",
                            transient=True) from None
        return Document(b"".join(chunks), name=uri, content_type=content_type)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --------------------------------------------------------------------------- the load step


def decode_bytea(value: str) -> bytes:
    """A ``bytea`` value as the events carry it (base64) or as a re-read gives it (``\\x`` hex:
    ``to_jsonb`` of the row). Base64 has no backslash, so the prefix tells them apart."""
    if value.startswith("\\x"):
        return bytes.fromhex(value[2:])
    return base64.b64decode(value, validate=True)


class Loader:
    """The load and parse steps of one vectorizer version, per batch of rows."""

    def __init__(self, loading: LoadingConfig, parsing: ParsingConfig, source_schema: str,
                 source_table: str, settings: LoadSettings | None = None) -> None:
        self.loading = loading
        self.parsing = parsing.implementation or "auto"
        self.source = (source_schema, source_table)
        self.settings = settings or LoadSettings.from_env()
        self.retries = loading.retries
        self._bytea: bool | None = None  # is the column a bytea (column loading only)
        self._http = HttpFetcher(self.settings)
        self._s3: Any = None

    async def load(self, conn: AsyncConnection[Any], values: Mapping[str, Any]
                   ) -> dict[str, str | LoadFailure]:
        """Each row's text by key, or why it has none. ``values``: the column's value per key."""
        if not isinstance(self.loading, LoadingUriConfig) and self._bytea is None:
            self._bytea = await _is_bytea(conn, *self.source, self.loading.column_name)
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(value: Any) -> str | LoadFailure:
            async with gate:
                return await self._load_one(value)

        keys = list(values)
        results = await asyncio.gather(*(one(values[k]) for k in keys))
        return dict(zip(keys, results, strict=True))

    async def _load_one(self, value: Any) -> str | LoadFailure:
        if value is None:
            return ""  # no document: no chunks, as for a NULL text column
        if isinstance(self.loading, LoadingUriConfig):
            return await self._load_uri(str(value))
        if not self._bytea:
            source: str | Document = value if isinstance(value, str) else str(value)
        else:
            try:
                source = Document(decode_bytea(str(value)))
            except (ValueError, binascii.Error):
                return LoadFailure("load: the bytea value is neither base64 nor \\x hex",
                                   {"error": "LoadError"})
        try:
            return await parse_in_thread(source, self.parsing)
        except ParsingError as exc:
            return LoadFailure(f"parse: {exc}", {"error": "ParsingError"})

    async def _load_uri(self, uri: str) -> str | LoadFailure:
        shown = redact_uri(uri)
        if not uri.strip():
            return LoadFailure("load: the URI is empty", {"error": "LoadError"})
        backoff = Backoff(initial=self.settings.backoff_s, cap=max(30.0, self.settings.backoff_s))
        attempt = 0
        while True:
            attempt += 1
            try:
                document = await self._fetch(uri.strip())
                break
            except LoadError as exc:
                if exc.transient and attempt <= self.retries:
                    delay = backoff.next_delay()
                    logger.info("loading %s failed (%s), attempt %d of %d, again in %.1f s",
                                shown, exc.cause, attempt, self.retries + 1, delay)
                    await asyncio.sleep(delay)
                    continue
                details: dict[str, Any] = {"uri": shown, "error": "LoadError",
                                           "attempts": attempt, "transient": exc.transient}
                if exc.status is not None:
                    details["status"] = exc.status
                tried = f" (after {attempt} attempts)" if attempt > 1 else ""
                return LoadFailure(f"load {shown}: {exc.cause}{tried}", details)
        try:
            return await parse_in_thread(document, self.parsing)
        except ParsingError as exc:
            return LoadFailure(f"parse {shown}: {exc}", {"uri": shown, "error": "ParsingError"})

    async def _fetch(self, uri: str) -> Document:
        scheme = urlsplit(uri).scheme.lower() if "://" in uri or uri.startswith("file:") else ""
        if scheme in ("", "file"):
            return await fetch_file(uri, self.settings)
        if scheme in ("http", "https"):
            return await self._http.fetch(uri)
        if scheme == "s3":
            if self._s3 is None:
                from processors.loading_s3 import S3Fetcher  # lazy: boto3 is heavy

                role = self.loading.aws_role_arn if isinstance(self.loading, LoadingUriConfig) else None
                self._s3 = S3Fetcher(self.settings, role)
            document: Document = await self._s3.fetch(uri)
            return document
        raise LoadError(f"unsupported URI scheme {scheme!r} (file, http, https and s3 are)")

    async def close(self) -> None:
        await self._http.close()


async def _is_bytea(conn: AsyncConnection[Any], schema: str, table: str, column: str) -> bool:
    """Whether the loading column is ``bytea`` (a document) rather than text; asked once."""
    cur = await conn.execute(
        "SELECT a.atttypid = 'bytea'::regtype FROM pg_attribute a"
        " WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
        " AND a.attname = %s AND NOT a.attisdropped", (schema, table, column))
    row = await cur.fetchone()
    return bool(row and row[0])
