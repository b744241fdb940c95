"""What the metrics cost a request, in process: a whole SessionMixin request (Tornado's handler
on an in-memory connection, as tests/support/calls.py serves it) on MemoryStore, with the
manager's metrics on and off, one session and 2,000 sessions, in interleaved rounds.

    python -m bench.metrics_cost [--rounds 9] [--requests 2000]

End to end (``python -m bench.run --issue22``) the same comparison is within the rounds' noise;
here the noise is a fraction of a microsecond.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import tornado.web
import tornsession

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]

import test_request_calls as calls_app  # noqa: E402
from support.calls import _serve, set_cookies  # noqa: E402


def app(metrics: bool) -> tornado.web.Application:
    application = calls_app.app("pair")
    application.session_manager = tornsession.TornadoSessionManager(  # type: ignore[attr-defined]
        calls_app.SECRET, store=tornsession.MemoryStore(), metrics=metrics
    )
    return application


async def main(rounds: int, requests: int) -> None:
    apps = {"on": app(True), "off": app(False)}
    cookies = {
        name: [set_cookies(await _serve(a, "/mixin-write", "", None)) for _ in range(2000)]
        for name, a in apps.items()
    }
    paths = ("mixin-write", "mixin-read")
    times: dict[tuple[str, str, str], list[float]] = {
        (name, path, load): [] for name in apps for path in paths for load in ("one", "many")
    }
    for round_ in range(rounds):
        order = list(apps.items()) if round_ % 2 else list(apps.items())[::-1]
        for name, application in order:
            for path in paths:
                for load in ("one", "many"):
                    jar = cookies[name][:1] if load == "one" else cookies[name]
                    started = time.perf_counter()
                    for i in range(requests):
                        await _serve(application, "/" + path, jar[i % len(jar)], None)
                    elapsed = time.perf_counter() - started
                    times[(name, path, load)].append(elapsed / requests * 1e6)
    for path in paths:
        for load in ("one", "many"):
            on, off = times[("on", path, load)], times[("off", path, load)]
            diff = statistics.median(a - b for a, b in zip(on, off, strict=True))
            print(
                f"{path:12} {load:4} metrics on {statistics.median(on):6.2f} µs, "
                f"off {statistics.median(off):6.2f} µs, on - off (median per round) {diff:+.2f} µs"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
