"""Threads for the tests: work run concurrently with its errors reported to the caller, and a
loopback listener that serves each connection on a thread of its own (fake or faulty servers)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def run_concurrently(work: Callable[[int], None], count: int) -> None:
    """Runs ``work(0)`` ... ``work(count - 1)`` in threads at once and waits for them all; an
    error any of them raised fails the caller, in the caller's thread."""
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            work(index)
        except BaseException as error:  # reported from the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


class LoopbackListener:
    """Listens on a free 127.0.0.1 port and hands each connection to :meth:`handle`, counted in
    ``connections``, until :meth:`close`. Subclasses set their own state before calling
    ``super().__init__()``: a connection may arrive at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """Takes one new connection; must not block the accepting thread."""
        raise NotImplementedError

    def close(self) -> None:
        self.stopped = True
        self.listener.close()
