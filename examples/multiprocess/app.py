"""One app process of the multi-process example: sessions in a shared Redis server.

    python examples/multiprocess/app.py --port 8001 --redis redis://127.0.0.1:6379/0

Every process must share the two secrets (here from the environment, as in production):
TORNSESSION_COOKIE_SECRET signs the cookies, TORNSESSION_SESSION_SECRET the session digests.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import tornado.web
import tornsession


class CounterHandler(tornsession.SessionMixin, tornado.web.RequestHandler):
    def get(self) -> None:
        self.session["hits"] = self.session.get("hits", 0) + 1
        self.write(
            {"hits": self.session["hits"], "pid": os.getpid(), "port": self.settings["port"]}
        )


def make_app(port: int, redis_url: str) -> tornado.web.Application:
    manager = tornsession.TornadoSessionManager(
        os.environ["TORNSESSION_SESSION_SECRET"],
        store=tornsession.RedisStore(redis_url, prefix="example:"),
        idle_timeout=3600,
    )
    return tornado.web.Application(
        [(r"/", CounterHandler)],
        cookie_secret=os.environ["TORNSESSION_COOKIE_SECRET"],
        session_manager=manager,
        port=port,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    args = parser.parse_args()
    make_app(args.port, args.redis).listen(args.port, address="127.0.0.1")
    print(f"app {os.getpid()} listening on http://127.0.0.1:{args.port}/", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
