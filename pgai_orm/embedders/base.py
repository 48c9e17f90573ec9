"""The one interface every provider implements, and the shared batching/retry/verify path.

A provider only says how to embed one request (:meth:`Embedder._embed_batch`) and what its
limits are; everything a pipeline relies on is here, once: truncation to the context window,
batches sized by count and tokens, bounded concurrency, retries of transient errors, and a
check that every vector has the configured dimensions (a wrong-sized vector would otherwise
fail later, inside the store transaction, for the whole batch).

``embed_sync`` exists for query-time search from ordinary synchronous SQLAlchemy code. It runs
the same async path on a private event loop in a background thread, so it also works when the
caller is itself inside a running loop, and async HTTP clients are kept per event loop (an
``httpx.AsyncClient`` must not be shared between loops).

Remote providers are paced (:mod:`pgai_orm.embedders.ratelimit`): before each request the
embedder awaits room for its tokens in the process-wide bucket of its provider key and model,
and each response (or 429) feeds the bucket its ``x-ratelimit-*`` headers. Because pacing, not
the number of requests in flight, is what keeps a backfill clear of 429 storms, remote providers
default to more concurrent requests (:data:`REMOTE_CONCURRENCY`). What each call spent (tokens,
requests, 429s) is counted (:mod:`pgai_orm.embedders.usage`): ``embedder.usage`` for the
process, ``embed(texts, usage=...)`` for one batch.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pgai_orm.embedders.batching import BatchLimits, fit_to_context, plan_batches
from pgai_orm.embedders.errors import (
    DimensionMismatchError,
    PermanentEmbeddingError,
    TransientEmbeddingError,
)
from pgai_orm.embedders.ratelimit import PacingBucket, acquire, parse_rate_limit_headers
from pgai_orm.embedders.retry import RetryPolicy, retry_async
from pgai_orm.embedders.usage import Usage, UsageCounter

if TYPE_CHECKING:
    import tiktoken

Vector = list[float]
T = TypeVar("T")
C = TypeVar("C")

DEFAULT_CONCURRENCY = 4
#: requests in flight per ``embed`` call for a paced remote provider (latency-bound, not CPU-bound)
REMOTE_CONCURRENCY = 8
DEFAULT_TIMEOUT = 60.0


@dataclass
class BatchResult:
    """One provider answer: the vectors, the tokens it billed (if it said) and its headers."""

    vectors: list[Vector]
    tokens: int | None = None
    headers: Mapping[str, str] | None = None


def estimate_tokens(texts: Sequence[str]) -> int:
    """Tokens of texts no tokenizer counted: about four characters a token (English text)."""
    return sum(len(text) // 4 + 1 for text in texts)


class Embedder(ABC):
    """Embeds texts into vectors of ``dimensions`` floats; one instance per vectorizer config."""

    #: provider limits used to cut requests; subclasses override
    limits: BatchLimits = BatchLimits()
    #: the provider's name in usage counts and metrics (``openai``, ``litellm``, ...)
    provider: str = "unknown"
    model: str = ""
    #: how many of a worker's batches may be embedding at once: two for a provider behind a
    #: network, so it computes one batch while the worker sends or reads the other (the round
    #: trip and the worker's own work no longer leave it idle); the pacing bucket still bounds
    #: the rate
    batches_in_flight: int = 2

    def __init__(
        self,
        dimensions: int,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
        self.dimensions = dimensions
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._runner: _LoopThread | None = None
        self._runner_lock = threading.Lock()
        self._usage = UsageCounter()

    # -- what providers implement -------------------------------------------------------------

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> list[Vector] | BatchResult:
        """One provider request for ``texts`` (already within limits); raise our error classes.

        Return a :class:`BatchResult` to report billed tokens and rate-limit headers.
        """

    def _encoding(self) -> tiktoken.Encoding | None:
        """Tokenizer used to count and truncate; ``None`` when the provider's is unknown."""
        return None

    def warm(self) -> None:
        """Load now what the first request would load (the tokenizer), so a worker can do it
        while it waits for its consumer group instead of on its first batch."""
        self._encoding()

    def _pacing(self) -> PacingBucket | None:
        """The rate-limit bucket requests wait on; ``None``: not paced (local models)."""
        return None

    # -- what was spent -----------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """Tokens, requests and 429s of every ``embed`` call of this embedder so far (a copy)."""
        return self._usage.snapshot()

    def drain_usage(self) -> Usage:
        """What was spent since the last drain (for a caller that reports periodically)."""
        return self._usage.drain()

    # -- the shared path ----------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, usage: Usage | None = None) -> list[Vector]:
        """Embed ``texts`` in order; one vector per text, each of ``dimensions`` floats.

        What the call spent is added to ``usage`` when given (also when it fails: the requests
        that succeeded were billed) and to :attr:`usage`.
        """
        if not texts:
            return []
        encoding = self._encoding()
        if encoding is None:
            prepared = fit_to_context(texts, None, self.limits.context_tokens)
        else:  # tokenizing thousands of chunks is CPU work: keep the event loop free
            prepared = await asyncio.to_thread(
                fit_to_context, texts, encoding, self.limits.context_tokens
            )
        batches = plan_batches(prepared.tokens, self.limits)
        spent = Usage()
        semaphore = asyncio.Semaphore(self.concurrency)
        # Set before a failing batch releases the semaphore: the batch it wakes must not send
        # a request (gather reports the failure only after that batch has already started).
        failed = False

        async def run(batch: range) -> list[Vector]:
            nonlocal failed
            inputs = prepared.texts[batch.start : batch.stop]
            if encoding is None:
                estimate = estimate_tokens(inputs)
            else:
                estimate = sum(prepared.tokens[batch.start : batch.stop])
            async with semaphore:
                if failed:
                    return []  # never used: gather raises the first failure
                try:
                    vectors = await self._request(inputs, estimate, spent)
                    return self._verify(vectors, len(inputs))
                except BaseException:
                    failed = True
                    raise

        tasks = [asyncio.ensure_future(run(batch)) for batch in batches]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # one batch failed for good: stop spending requests on the others
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self._usage.add(spent)
            if usage is not None:
                usage.add(spent)
        return [vector for batch_vectors in results for vector in batch_vectors]

    async def _request(self, inputs: list[str], estimate: int, spent: Usage) -> list[Vector]:
        """One request with pacing and retries; what it spent goes to ``spent``.

        Time spent waiting for the bucket does not count against the retry policy's total
        time: a request queued behind others for its turn has not been failing.
        """
        bucket = self._pacing()
        paced = 0.0

        async def attempt() -> list[Vector]:
            nonlocal paced
            reservation = None
            if bucket is not None:
                reservation, waited = await acquire(bucket, estimate)
                paced += waited
            try:
                answer = await self._embed_batch(inputs)
            except TransientEmbeddingError as exc:
                if exc.status == 429:
                    spent.rate_limited += 1
                    if bucket is not None:
                        bucket.rejected(reservation, exc.rate_limit, exc.retry_after)
                elif bucket is not None and reservation is not None:
                    bucket.release(reservation)
                raise
            except BaseException:
                if bucket is not None and reservation is not None:
                    bucket.release(reservation)
                raise
            result = answer if isinstance(answer, BatchResult) else BatchResult(answer)
            if bucket is not None and reservation is not None:
                bucket.settle(reservation, parse_rate_limit_headers(result.headers), result.tokens)
            spent.tokens += result.tokens if result.tokens is not None else estimate
            spent.requests += 1
            return result.vectors

        return await retry_async(attempt, self.retry, clock=lambda: time.monotonic() - paced)

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        """Blocking :meth:`embed`, usable from sync code and from inside a running loop."""
        if not texts:
            return []
        with self._runner_lock:
            if self._runner is None:
                self._runner = _LoopThread(type(self).__name__)
        return self._runner.run(self.embed(texts))

    def close(self) -> None:
        """Stop the private loop thread used by :meth:`embed_sync`, if one was started."""
        with self._runner_lock:
            if self._runner is not None:
                self._runner.stop()
                self._runner = None

    def _verify(self, vectors: list[Vector], expected: int) -> list[Vector]:
        if len(vectors) != expected:
            raise PermanentEmbeddingError(
                f"provider returned {len(vectors)} embeddings for {expected} inputs"
            )
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise DimensionMismatchError(
                    f"provider returned {len(vector)}-dimensional embeddings, "
                    f"the vectorizer is configured for {self.dimensions}"
                )
        return vectors


class PerLoop(Generic[C]):
    """One async client per running event loop, closed when that loop shuts down.

    An async HTTP client belongs to the loop it first ran on. Closing happens through an async
    generator parked in the loop: ``asyncio.run`` (and any loop that calls
    ``shutdown_asyncgens``) finalises it before closing, which awaits ``client.close()``.
    Without that, the ``openai`` SDK closes an abandoned client from whatever loop runs next,
    on sockets of a loop that is already closed.
    """

    def __init__(self, factory: Callable[[], C]) -> None:
        self._factory = factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[C, Any]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self) -> C:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = self._factory()
            closer = _close_on_shutdown(client)
            await closer.__anext__()
            entry = (client, closer)
            self._clients[loop] = entry
        return entry[0]


async def _close_on_shutdown(client: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        close = getattr(client, "aclose", None) or client.close
        await close()


class _LoopThread:
    """A daemon thread running an event loop, to run coroutines from synchronous callers."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{name}-sync", daemon=True
        )
        self._thread.start()
        atexit.register(self.stop)  # background tasks (e.g. litellm's logger) end cleanly

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        """Cancel what libraries left running in the loop, close parked clients, end the thread."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        atexit.unregister(self.stop)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
