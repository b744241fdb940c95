"""A Tornado app for the outage and shared-store soak tests (tests/test_outage_soak.py) and the
kill soak (tests/kill_soak.py, `make soak`).

    python -m tests.apps.outage_app --port N --store redis|memcached|memory|file|sqlite
        [--url U] [--servers S ...] [--path P] [--durable] [--timeout SECONDS]

GET /inc increments the session's counter (SessionMixin: loaded and saved on worker threads, the
save before the response) and answers {"count": n, "port": PORT}. GET /visit?m=MARKER does the
same for the kill soak's visitors: a new session keeps MARKER, and the answer echoes the session's
own marker and count, {"marker": ..., "count": n, "fresh": bool}, so the client can tell a
session that is not its own (crossed) from its own (counted). A failing
request answers 500 with {"error": <exception class>, "message": ...} in the body and logs one
line `request failed: <exception class>: <message>` (no traceback, so the log stays small while
a store is down). Prints "listening on PORT" once it accepts connections
(--port 0: a free port).
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

import tornado.web
import tornsession
from support.apps import serve_forever, store_from_args, store_parser

SECRET = "outage-test-secret"
log = logging.getLogger("outage_app")


class IncHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
    """Loads the session in prepare() and saves it before the response, off the IOLoop."""

    def initialize(self, port: int) -> None:
        self.port = port

    def get(self) -> None:
        self.session["count"] = self.session.get("count", 0) + 1
        self.write({"count": self.session["count"], "port": self.port})

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass  # write_error logs one line; a failed save reaches it without log_exception

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        name = exc_info[0].__name__ if exc_info else self._reason
        message = str(exc_info[1]) if exc_info else ""
        log.error("request failed: %s: %s", name, message)
        self.finish({"error": name, "message": message})


class VisitHandler(IncHandler):
    """The kill soak's visitor: the session's marker is set once, then echoed with the count."""

    def get(self) -> None:
        fresh = "marker" not in self.session
        if fresh:
            self.session["marker"] = self.get_query_argument("m")
        self.session["count"] = self.session.get("count", 0) + 1
        self.write(
            {"marker": self.session["marker"], "count": self.session["count"], "fresh": fresh}
        )


def main() -> None:
    kinds = ["redis", "memcached", "memory", "file", "sqlite"]
    args = store_parser(kinds, timeout=0.5).parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s %(message)s")
    store = store_from_args(args, connect_timeout=args.timeout, timeout=args.timeout)
    manager = tornsession.TornadoSessionManager(SECRET, store=store)
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
            [(r"/inc", IncHandler, {"port": port}), (r"/visit", VisitHandler, {"port": port})],
            cookie_secret=SECRET,
            session_manager=manager,
            log_function=lambda handler: None,  # no access log: only failures are logged
        ),
    )


if __name__ == "__main__":
    main()
