"""Two app processes on two ports, one Redis: one visitor's session follows it across both.

    python examples/multiprocess/run.py [--requests N]

Starts redis-server on a free loopback port (no persistence), two ``app.py`` processes sharing
it and the secrets, makes requests alternating between the two with one cookie jar (as a load
balancer would spread a browser's requests), prints what each answered and stops everything.
Exits non-zero when the session did not carry over.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_redis(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server on port {port} did not answer")
        time.sleep(0.05)


def start_app(port: int, redis_url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    app = subprocess.Popen(
        [sys.executable, str(HERE / "app.py"), "--port", str(port), "--redis", redis_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert app.stdout is not None
    line = app.stdout.readline()
    if "listening on" not in line:
        app.kill()
        raise RuntimeError(f"app on port {port} did not start: {line}{app.stdout.read()}")
    print(line.strip())
    return app


def get(port: int, cookies: dict[str, str]) -> dict[str, Any]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"port {port} answered {response.status}: {body!r}")
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                cookies[name] = morsel.coded_value
        answer: dict[str, Any] = json.loads(body)
        return answer
    finally:
        connection.close()


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6)
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    redis_port = free_port()
    processes: list[subprocess.Popen[str]] = []
    try:
        processes.append(
            subprocess.Popen(
                [
                    redis_server,
                    "--bind",
                    HOST,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                text=True,
            )
        )
        wait_for_redis(redis_port)
        redis_url = f"redis://{HOST}:{redis_port}/0"
        print(f"redis-server on {redis_url}")
        env = dict(
            os.environ,
            TORNSESSION_COOKIE_SECRET=secrets.token_hex(32),
            TORNSESSION_SESSION_SECRET=secrets.token_hex(32),
        )
        ports = [free_port(), free_port()]
        for port in ports:
            processes.append(start_app(port, redis_url, env))

        cookies: dict[str, str] = {}  # one visitor
        pids = set()
        for number in range(1, args.requests + 1):
            port = ports[number % 2]
            answer = get(port, cookies)
            pids.add(answer["pid"])
            print(f"request {number} -> port {port} (pid {answer['pid']}): hits={answer['hits']}")
            if answer["hits"] != number:
                print(f"expected hits={number}: the session did not follow", file=sys.stderr)
                return 1
        print(f"one session across {len(pids)} processes: {args.requests} hits, none lost")
        return 0
    finally:
        for process in reversed(processes):
            stop(process)


if __name__ == "__main__":
    sys.exit(main())
