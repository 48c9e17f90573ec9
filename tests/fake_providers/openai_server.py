"""A local server speaking OpenAI's ``POST /v1/embeddings`` (also Voyage's, which is a superset).

It enforces what the real API enforces and the embedders must respect: a Bearer key, no empty
inputs, at most
2,048 inputs and 300,000 tokens per request, at most 8,191 tokens per input (cl100k_base), and
``dimensions`` only for models that accept it. Vectors come back as floats or, when asked
with ``encoding_format: base64`` (the ``openai`` SDK's default), as base64 little-endian float32.
Its 401 echoes the presented key in full, so tests can check the key never leaks into our errors.
Given a :class:`bench.rate_limits.RateLimiter`, it enforces requests/tokens per minute as OpenAI
does: ``x-ratelimit-*`` headers on every answer, 429 with ``Retry-After`` over the limit
(``rate_limited`` counts them).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from bench.rate_limits import RateLimiter, retry_after_headers
from tests.fake_providers._server import FakeServer, Fault, fake_vector

DEFAULT_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
CONTEXT_TOKENS = 8191


def _error(
    message: str, kind: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _encoding() -> Any:
    from pgai_orm.embedders.batching import cl100k

    return cl100k()


class FakeOpenAIServer(FakeServer):
    """OpenAI embeddings; ``api_key`` is the only key it accepts."""

    def __init__(self, api_key: str = "sk-test-secret-0123456789",
                 limiter: RateLimiter | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.limiter = limiter
        self.rate_limited = 0
        self.admitted_tokens = 0

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def embedding_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/embeddings")]

    def handle(
        self, path: str, headers: dict[str, str], body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        if not path.rstrip("/").endswith("/embeddings"):
            return 404, {}, _error(f"Invalid URL (POST {path})")
        presented = headers.get("authorization", "").removeprefix("Bearer ")
        if presented != self.api_key:
            return (
                401,
                {},
                _error(
                    f"Incorrect API key provided: {presented}.",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
            )
        if not isinstance(body, dict) or "input" not in body or "model" not in body:
            return 400, {}, _error("'input' and 'model' are required")
        model = body["model"]
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not inputs:
            return 400, {}, _error("'input' must not be empty")
        if len(inputs) > MAX_INPUTS:
            return (
                400,
                {},
                _error(f"'input' must have at most {MAX_INPUTS} items, got {len(inputs)}"),
            )
        texts = [t if isinstance(t, str) else _encoding().decode(t) for t in inputs]
        if any(t == "" for t in texts):
            return 400, {}, _error("'$.input' is invalid: empty strings are not allowed")
        counts = [len(t) for t in _encoding().encode_ordinary_batch(texts)]
        for count in counts:
            if count > CONTEXT_TOKENS:
                return (
                    400,
                    {},
                    _error(
                        f"This model's maximum context length is {CONTEXT_TOKENS} tokens, "
                        f"however you requested {count} tokens. Please reduce your prompt."
                    ),
                )
        if sum(counts) > MAX_REQUEST_TOKENS:
            return (
                400,
                {},
                _error(
                    f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request"
                ),
            )
        dimensions = body.get("dimensions")
        if dimensions is not None and model == "text-embedding-ada-002":
            return 400, {}, _error("This model does not support specifying dimensions.")
        size = dimensions or DEFAULT_DIMENSIONS.get(model) or body.get("output_dimension") or 1024
        if fault is not None and fault.wrong_dimensions:
            size -= 1
        limit_headers: dict[str, str] = {}
        if self.limiter is not None:
            decision = self.limiter.admit("default", sum(counts))
            limit_headers = decision.headers
            if not decision.admitted:
                with self._lock:
                    self.rate_limited += 1
                return (429, {**limit_headers, **retry_after_headers(decision.retry_after)},
                        _error("Rate limit reached", "tokens", "rate_limit_exceeded"))
            with self._lock:
                self.admitted_tokens += sum(counts)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_vector(text, size)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return 200, limit_headers, {"object": "list", "data": data, "model": model, "usage": usage}
