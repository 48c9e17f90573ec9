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
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pgai_orm.embedders.batching import BatchLimits, fit_to_context, plan_batches
from pgai_orm.embedders.errors import (
    DimensionMismatchError,
    PermanentEmbeddingError,
)
from pgai_orm.embedders.retry import RetryPolicy, retry_async

if TYPE_CHECKING:
    import tiktoken

Vector = list[float]
T = TypeVar("T")
C = TypeVar("C")

DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0


class Embedder(ABC):
    """Embeds texts into vectors of ``dimensions`` floats; one instance per vectorizer config."""

    #: provider limits used to cut requests; subclasses override
    limits: BatchLimits = BatchLimits()

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

    # -- what providers implement -------------------------------------------------------------

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        """One provider request for ``texts`` (already within limits); raise our error classes."""

    def _encoding(self) -> tiktoken.Encoding | None:
        """Tokenizer used to count and truncate; ``None`` when the provider's is unknown."""
        return None

    # -- the shared path ----------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Embed ``texts`` in order; one vector per text, each of ``dimensions`` floats."""
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
        semaphore = asyncio.Semaphore(self.concurrency)
        # Set before a failing batch releases the semaphore: the batch it wakes must not send
        # a request (gather reports the failure only after that batch has already started).
        failed = False

        async def run(batch: range) -> list[Vector]:
            nonlocal failed
            inputs = prepared.texts[batch.start : batch.stop]
            async with semaphore:
                if failed:
                    return []  # never used: gather raises the first failure
                try:
                    vectors = await retry_async(lambda: self._embed_batch(inputs), self.retry)
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
        return [vector for batch_vectors in results for vector in batch_vectors]

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
