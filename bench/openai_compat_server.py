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
in the model); ``POST /stats/reset`` zeroes them. Standard library HTTP only, so it starts fast
and adds nothing to the project's dependencies; one thread per connection, and the model call
itself runs concurrently (numpy releases the GIL).

Usage::

    python bench/openai_compat_server.py --port 8765      # prints "listening on ..." when ready
"""

from __future__ import annotations

import argparse
import base64
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


class _BadRequest(Exception):
    pass


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


def make_handler(model: Model, counters: Counters) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one model and one set of counters."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the SDKs reuse connections

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # one line per request would dominate the log of a 10k-row run

        def _reply(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
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
                self._reply(200, {"ok": True})
                return
            if not path.endswith("/v1/embeddings"):
                self._reply(404, {"error": {"message": f"Invalid URL (POST {self.path})"}})
                return
            client = path.removesuffix("/v1/embeddings").strip("/") or "default"
            try:
                self._reply(200, self._embeddings(client, body))
            except _BadRequest as exc:
                self._reply(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})

        def _embeddings(self, client: str, body: Any) -> dict[str, Any]:
            texts = [model.decode(item) for item in _inputs(body)]
            if any(t == "" for t in texts):
                raise _BadRequest("'$.input' is invalid: empty strings are not allowed")
            dimensions = body.get("dimensions") or NATIVE_DIMENSIONS
            if not isinstance(dimensions, int) or not 0 < dimensions <= NATIVE_DIMENSIONS:
                raise _BadRequest(f"dimensions must be 1..{NATIVE_DIMENSIONS}, got {dimensions!r}")
            tokens = model.count_tokens(texts)
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
            return {"object": "list", "data": data, "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return Handler


def serve(host: str, port: int) -> None:
    """Load the model, then serve forever (the caller polls ``/health`` for readiness)."""
    model = Model()
    model.embed(["warm up"], NATIVE_DIMENSIONS)
    server = ThreadingHTTPServer((host, port), make_handler(model, Counters()))
    server.daemon_threads = True
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
