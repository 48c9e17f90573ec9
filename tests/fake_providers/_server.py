"""A threaded HTTP/1.1 JSON server with request recording and scripted faults."""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    """What the next ``times`` requests get instead of a normal answer.

    ``status`` answers with that code and ``body``/``headers``; ``delay`` holds the response that
    long first (a slow server: the client should time out; :meth:`FakeServer.stop` releases it);
    ``wrong_dimensions`` answers normally but with vectors one element short.
    """

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    wrong_dimensions: bool = False
    times: int = 1


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class _Listener(ThreadingHTTPServer):
    """A listen backlog for many concurrent clients (the default 5 refuses connections)."""

    request_queue_size = 128


class FakeServer:
    """Base class: subclasses implement :meth:`handle` for their provider's routes."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Condition()
        self._released = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self._latch_at: int | None = None
        self._latch_open = threading.Event()
        self._httpd = _Listener(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._latch_open.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def hold_until_concurrent(self, n: int) -> None:
        """Hold every request until ``n`` are in flight at once (then let all through).

        Proves a client really runs ``n`` requests concurrently, without timing guesses.
        """
        self._latch_at = n
        self._latch_open.clear()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.popleft()
            return fault

    # -- request handling ------------------------------------------------------------------

    def handle(
        self, path: str, headers: dict[str, str], body: Any, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def _serve(
        self, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, {}, b'{"error": "invalid JSON"}'
        with self._lock:
            self.requests.append(Recorded(path, headers, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self._latch_at is not None and self.in_flight >= self._latch_at:
                self._latch_open.set()
        try:
            if self._latch_at is not None:
                self._latch_open.wait(timeout=10)
            fault = self._next_fault()
            if fault is not None and fault.delay:
                self._released.wait(timeout=fault.delay)
            if fault is not None and fault.status is not None:
                payload = (
                    fault.body
                    if fault.body is not None
                    else {"error": {"message": "injected fault"}}
                )
                return fault.status, dict(fault.headers), json.dumps(payload).encode()
            status, extra_headers, payload = self.handle(path, headers, body, fault)
            return status, extra_headers, json.dumps(payload).encode()
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, payload = server._serve(self.path, headers, raw)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
                pass

        return Handler
