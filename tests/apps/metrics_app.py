"""A Tornado app with a standard Prometheus ``/metrics`` page, for the metrics tests.

    python -m tests.apps.metrics_app --port 0 --store memory

GET  /count    adds 1 to the session's "n" (a write)
GET  /peek     reads "n" (no write)
GET  /hold     writes "held", then holds the request (and the session's turn) for 1.5 s
POST /logout   destroys the session
GET  /metrics  prometheus_client's exposition of tornsession.metrics.register(registry)
"""

from __future__ import annotations

import asyncio

import prometheus_client
import tornado.web
import tornsession
import tornsession.metrics
from support.apps import serve_forever, store_from_args, store_parser

SECRET = "metrics-app-test-secret-of-32-bytes-or-more"


class Count(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["n"] = self.session.get("n", 0) + 1
        self.write({"n": self.session["n"]})


class Peek(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"n": self.session.get("n")})


class Hold(tornsession.SessionMixin, tornado.web.RequestHandler):
    async def get(self) -> None:
        self.session["held"] = True
        await asyncio.sleep(1.5)
        self.write("held")


class Logout(tornsession.SessionMixin, tornado.web.RequestHandler):
    async def post(self) -> None:
        await self.session.adestroy()
        self.write("bye")


class Metrics(tornado.web.RequestHandler):
    def get(self) -> None:
        registry = self.settings["registry"]
        self.set_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
        self.write(prometheus_client.generate_latest(registry))


def main() -> None:
    args = store_parser(["memory", "file", "sqlite", "redis", "memcached"]).parse_args()
    manager = tornsession.TornadoSessionManager(
        SECRET, store=store_from_args(args), order_timeout=0.5
    )
    registry = prometheus_client.CollectorRegistry()
    tornsession.metrics.register(registry)
    serve_forever(
        args.port,
        lambda port: tornado.web.Application(
            [
                (r"/count", Count),
                (r"/peek", Peek),
                (r"/hold", Hold),
                (r"/logout", Logout),
                (r"/metrics", Metrics),
            ],
            cookie_secret=SECRET,
            session_manager=manager,
            registry=registry,
        ),
    )


if __name__ == "__main__":
    main()
