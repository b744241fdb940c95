"""A Tornado app for the soak test: GET /inc increments the session's counter and answers it.

    python -m tests.apps.soak_app --port N --store memory|file|sqlite|redis|memcached [--path P]
        [--url U] [--servers S ...]

Prints "listening on PORT" once it accepts connections
(--port 0: a free port).
"""

from __future__ import annotations

from typing import Any

import tornado.web
import tornsession
from support.apps import serve_forever, store_from_args, store_parser

SECRET = "soak-test-secret"


class IncHandler(tornado.web.RequestHandler):
    def initialize(self, manager: tornsession.TornadoSessionManager) -> None:
        self.session = tornsession.TornadoSession(manager, self)

    def get(self) -> None:
        self.session["count"] = self.session.get("count", 0) + 1
        self.session["history"] = [*self.session.get("history", [])[-20:], self.session["count"]]
        self.session.save()
        self.write({"count": self.session["count"]})


def main() -> None:
    args = store_parser(["memory", "file", "sqlite", "redis", "memcached"]).parse_args()
    if args.store == "file":
        options: dict[str, Any] = {"session_dir": args.path}
    else:
        options = {"store": store_from_args(args)}
    manager = tornsession.TornadoSessionManager(SECRET, **options)
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
            [(r"/inc", IncHandler, {"manager": manager})], cookie_secret=SECRET
        ),
    )


if __name__ == "__main__":
    main()
