"""An OpenAI-compatible ``POST /v1/embeddings`` server backed by the offline wordllama model.

Why it exists: the side-by-side benchmark (``bench/vs_pgai.py``) must give pgai Vectorizer and
this project the *same* model reached the *same* way. pgai's worker only speaks to remote
providers, so the offline model is put behind OpenAI's wire format and both systems are
configured as OpenAI clients of it. The server also counts what each client sent, which is how
the benchmark reports "embedding calls and tokens" per system without trusting either system's
own logs.

Clients are told apart by a path prefix: a base URL of ``http://127.0.0.1:PORT/ours/v1`` counts
under ``ours``, ``.../pgai/v1`` under ``pgai``, a bare ``/v1`` under ``default``. Wire format, as
the ``openai`` SDK uses it:

* ``input``: a string, a list of strings, a list of token ids or a list of token-id lists (the
  API accepts all four; token ids are decoded with cl100k_base);
* ``encoding_format: "base64"`` (the ``openai`` SDK's default, which this project's embedder
  keeps) answers little-endian float32 in base64; anything else answers JSON floats (pgai's
  worker asks for ``"float"`` and stream-parses the response);
* ``dimensions``: Matryoshka truncation of the 256-d vector (then re-normalised), as wordllama
  itself truncates; more than 256 is a 400;
* ``usage.prompt_tokens`` / ``total_tokens``: cl100k_base tokens of the inputs, as OpenAI bills.

``GET /stats`` returns the per-client counters (calls, inputs, tokens, characters, seconds spent
in the model, 429s answered, and the wall-clock times of the first request and the last answer);
``POST /stats/reset`` zeroes them and refills every client's rate-limit buckets.

As a stand-in for a remote provider (``bench/remote_provider.py``):

* ``--latency-ms`` and ``--per-token-us`` hold each answer that long (a fixed round trip plus a
  time per input token, as a remote model's latency grows with the request);
* ``--rpm`` / ``--tpm`` enforce requests and tokens per minute the way OpenAI does
  (:mod:`bench.rate_limits`): every answer carries the ``x-ratelimit-*`` headers, a request over
  the limit gets a 429 at once (no model latency) with ``Retry-After``/``retry-after-ms``;
  ``--burst-s`` is how many seconds of the limit the bucket holds;
* ``--embeddings hash`` answers deterministic pseudo-random unit vectors seeded by a hash of
  each text instead of running wordllama, so the endpoint's CPU stays out of a benchmark about
  the client (tokens are still counted with cl100k_base). Standard library HTTP only, so it starts fast
and adds nothing to the project's dependencies; one thread per connection, and the model call
itself runs concurrently (numpy releases the GIL).

Usage::

    python bench/openai_compat_server.py --port 8765      # prints "listening on ..." when ready
    python bench/openai_compat_server.py --embeddings hash --latency-ms 200 --per-token-us 10 \
        --rpm 3000 --tpm 1000000 --burst-s 6
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rate_limits import RateLimiter, retry_after_headers

NATIVE_DIMENSIONS = 256
MAX_INPUTS = 2048


@dataclass
class ClientStats:
    """What one client (path prefix) asked of the model; ``model_s`` is time inside the model."""

    calls: int = 0
    inputs: int = 0
    tokens: int = 0
    chars: int = 0
    model_s: float = 0.0
    rate_limited: int = 0
    #: wall-clock (time.time()) of the first request and of the last successful answer
    first_at: float | None = None
    last_at: float | None = None


class Counters:
    """Thread-safe per-client counters (requests are served on many threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, ClientStats] = {}

    def add(self, client: str, inputs: int, tokens: int, chars: int, model_s: float) -> None:
        with self._lock:
            stats = self._stats.setdefault(client, ClientStats())
            stats.calls += 1
            stats.inputs += inputs
            stats.tokens += tokens
            stats.chars += chars
            stats.model_s += model_s
            stats.last_at = time.time()

    def arrived(self, client: str) -> None:
        with self._lock:
            stats = self._stats.setdefault(client, ClientStats())
            if stats.first_at is None:
                stats.first_at = time.time()

    def rejected(self, client: str) -> None:
        with self._lock:
            self._stats.setdefault(client, ClientStats()).rate_limited += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(s) for name, s in self._stats.items()}

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()


class Model:
    """wordllama ``l2_supercat`` (loaded offline, once) and the cl100k_base token counter."""

    def __init__(self) -> None:
        from pgai_orm.embedders.batching import cl100k
        from pgai_orm.embedders.local import _wordllama

        self._wordllama = _wordllama(NATIVE_DIMENSIONS)
        self._encoding = cl100k()

    def decode(self, item: str | list[int]) -> str:
        return item if isinstance(item, str) else self._encoding.decode(item)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self._encoding.encode_ordinary_batch(texts))

    def embed(self, texts: list[str], dimensions: int) -> np.ndarray:
        vectors = np.asarray(self._wordllama.embed(texts, norm=True), dtype=np.float32)
        if dimensions < NATIVE_DIMENSIONS:
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        return vectors


class HashModel(Model):
    """Deterministic unit vectors from a hash of each text: no model CPU, same text same vector."""

    def __init__(self) -> None:
        from pgai_orm.embedders.batching import cl100k

        self._encoding = cl100k()

    def embed(self, texts: list[str], dimensions: int) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(dimensions, dtype=np.float32))
        vectors = np.vstack(rows)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class Behaviour:
    """How the endpoint plays a remote provider: latency and limits (defaults: a local model)."""

    latency_s: float = 0.0
    per_token_s: float = 0.0
    limiter: RateLimiter | None = None


class _BadRequest(Exception):
    pass


class _RateLimited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("rate limited")
        self.headers = headers


def _inputs(body: Any) -> list[str | list[int]]:
    """Normalise OpenAI's four ``input`` shapes to a list of strings or token-id lists."""
    if not isinstance(body, dict) or "input" not in body or "model" not in body:
        raise _BadRequest("'input' and 'model' are required")
    raw = body["input"]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _BadRequest("'input' must be a non-empty string or array")
    if len(raw) > MAX_INPUTS:
        raise _BadRequest(f"'input' must have at most {MAX_INPUTS} items, got {len(raw)}")
    return raw


def make_handler(model: Model, counters: Counters,
                 behaviour: Behaviour | None = None) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one model, one set of counters and one behaviour."""
    plays = behaviour or Behaviour()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the SDKs reuse connections

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # one line per request would dominate the log of a 10k-row run

        def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                self._reply(200, counters.snapshot())
            elif self.path.rstrip("/") == "/health":
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": {"message": f"no route GET {self.path}"}})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                body = self._body()
            except ValueError:
                self._reply(400, {"error": {"message": "body is not JSON"}})
                return
            if path == "/stats/reset":
                counters.reset()
                if plays.limiter is not None:
                    plays.limiter.reset()
                self._reply(200, {"ok": True})
                return
            if not path.endswith("/v1/embeddings"):
                self._reply(404, {"error": {"message": f"Invalid URL (POST {self.path})"}})
                return
            client = path.removesuffix("/v1/embeddings").strip("/") or "default"
            counters.arrived(client)
            try:
                payload, headers = self._embeddings(client, body)
                self._reply(200, payload, headers)
            except _BadRequest as exc:
                self._reply(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            except _RateLimited as exc:
                counters.rejected(client)
                self._reply(429, {"error": {"message": "Rate limit reached for requests",
                                            "type": "requests", "code": "rate_limit_exceeded"}},
                            exc.headers)

        def _embeddings(self, client: str, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
            texts = [model.decode(item) for item in _inputs(body)]
            if any(t == "" for t in texts):
                raise _BadRequest("'$.input' is invalid: empty strings are not allowed")
            dimensions = body.get("dimensions") or NATIVE_DIMENSIONS
            if not isinstance(dimensions, int) or not 0 < dimensions <= NATIVE_DIMENSIONS:
                raise _BadRequest(f"dimensions must be 1..{NATIVE_DIMENSIONS}, got {dimensions!r}")
            tokens = model.count_tokens(texts)
            headers: dict[str, str] = {}
            if plays.limiter is not None:
                decision = plays.limiter.admit(client, tokens)
                headers = decision.headers
                if not decision.admitted:
                    raise _RateLimited({**headers, **retry_after_headers(decision.retry_after)})
            hold = plays.latency_s + plays.per_token_s * tokens
            if hold > 0:
                time.sleep(hold)
            started = time.perf_counter()
            vectors = model.embed(texts, dimensions)
            counters.add(client, len(texts), tokens, sum(map(len, texts)),
                         time.perf_counter() - started)
            as_base64 = body.get("encoding_format") == "base64"
            data = [
                {"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64
                               else v.tolist())}
                for i, v in enumerate(vectors)
            ]
            return ({"object": "list", "data": data, "model": body["model"],
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, headers)

    return Handler


def serve(host: str, port: int, model: Model | None = None, behaviour: Behaviour | None = None) -> None:
    """Load the model, then serve forever (the caller polls ``/health`` for readiness)."""
    model = model or Model()
    model.embed(["warm up"], NATIVE_DIMENSIONS)
    server = ThreadingHTTPServer((host, port), make_handler(model, Counters(), behaviour))
    server.request_queue_size = 128  # many clients at once must not be refused at connect
    server.daemon_threads = True
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--embeddings", choices=["wordllama", "hash"], default="wordllama")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed time per answer")
    parser.add_argument("--per-token-us", type=float, default=0.0, help="added per input token")
    parser.add_argument("--rpm", type=float, default=None, help="requests per minute per client")
    parser.add_argument("--tpm", type=float, default=None, help="tokens per minute per client")
    parser.add_argument("--burst-s", type=float, default=60.0,
                        help="seconds of the limits a client's buckets hold (OpenAI: 60)")
    args = parser.parse_args()
    limiter = RateLimiter(args.rpm, args.tpm, args.burst_s) if args.rpm or args.tpm else None
    behaviour = Behaviour(args.latency_ms / 1000.0, args.per_token_us / 1e6, limiter)
    serve(args.host, args.port, HashModel() if args.embeddings == "hash" else Model(), behaviour)


if __name__ == "__main__":
    main()
