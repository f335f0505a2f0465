"""A real HTTP server on loopback whose paths answer the ways remote storage fails: 403, 404, 503, a few 503s
before the file, or not at all."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import pytest

T = TypeVar("T")
STATUS_BY_FOLDER = {"forbidden": 403, "gone": 404, "server-error": 503}
FLAKY_FAILURES = 3  # requests under /flaky/ answered 503 before the file is served
STALL_LIMIT_S = 120.0  # a stalled request is released at teardown, or after this long


@dataclass
class FailingHttp:
    """The server's base URL, the files ``/flaky/<name>`` serves, and the requests per path so far."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)


class FailingStorageHandler(BaseHTTPRequestHandler):
    """``/forbidden/...`` 403, ``/gone/...`` 404, ``/server-error/...`` 503, ``/stall/...`` never answers,
    ``/flaky/<name>`` 503 for the first ``FLAKY_FAILURES`` requests, then the file."""

    state: FailingHttp  # set on a subclass by ``failing_http_server``

    def _answer(self) -> None:
        self.state.hits[self.path] += 1
        folder, _, name = self.path.strip("/").partition("/")
        if folder == "stall":
            self.state.release.wait(STALL_LIMIT_S)
            self.close_connection = True
            return
        body = b""
        if folder == "flaky" and self.state.hits[self.path] > FLAKY_FAILURES and name in self.state.files:
            status, body = 200, self.state.files[name]
        else:
            status = STATUS_BY_FOLDER.get(folder, 503 if folder == "flaky" else 404)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: the tests check what clients see
        return


@contextlib.contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler], make_state: Callable[[str], T], name: str) -> Iterator[T]:
    """Serve ``handler`` on a free loopback port in a thread; the handler class sees ``make_state(url)`` as
    ``self.state``, which is yielded. Stopped and closed on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state = make_state(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (handler,), {"state": state})
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def failing_http_server() -> Iterator[FailingHttp]:
    """A ``FailingStorageHandler`` server on loopback for one test module."""
    with loopback_server(FailingStorageHandler, lambda url: FailingHttp(url=url), "failing-http") as state:
        try:
            yield state
        finally:
            state.release.set()  # let stalled requests end before the server shuts down
