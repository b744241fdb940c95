"""The state of ``python -m tornsession copy``: for every session id it copied, the digest of
the record it wrote, so that running it again (after an interruption, or after the app switched
to the target) knows what changed where since (see ``_copy_plan.decide``).

Two files: the state itself (``PATH``, one JSON object, written atomically when a run ends) and
its journal (``PATH.journal``, a line ``<id> <digest>`` or ``<id> -`` per change, appended as the
run goes and fsynced every few hundred lines). A line is appended only after the write it
records succeeded: a run killed between the two only leaves that id to be looked at again. The
URLs are kept with their passwords masked, to refuse a state made for another pair of stores.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tornsession._cli_common import UsageError, masked

FORMAT = 1
#: Journal lines written between two fsyncs.
SYNC_EVERY = 256
_HEX = frozenset("0123456789abcdef")


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and _HEX.issuperset(text)


def default_path(from_url: str, to_url: str) -> Path:
    """``./.tornsession-copy-<16 hex>.json``: one state per pair of URLs, named by a hash (the
    URLs, passwords and all, never appear in it)."""
    key = hashlib.sha256(f"{from_url}\0{to_url}".encode()).hexdigest()[:16]
    return Path(f".tornsession-copy-{key}.json")


class CopyState:
    """What the last runs copied, by id; ``remember``/``forget`` journal each change."""

    def __init__(self, path: Path, from_url: str, to_url: str, *, writable: bool) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.urls = {"from": masked(from_url), "to": masked(to_url)}
        self.writable = writable
        self.copied: dict[str, str] = {}
        self._pending: list[str] = []
        self._unsynced = 0
        self._journal: int | None = None
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        except OSError as error:
            raise UsageError(f"cannot read the copy state {self.path}: {error.strerror}") from None
        if text is not None:
            try:
                state = json.loads(text)
                urls = {"from": state["from"], "to": state["to"]}
                copied = state["copied"]
                if state["format"] != FORMAT or not isinstance(copied, dict):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise UsageError(
                    f"{self.path} is not the state of a tornsession copy (move it away, or "
                    "name another file with --state PATH)"
                ) from None
            self._check_urls(urls)
            self.copied = {str(k): str(v) for k, v in copied.items()}
        self._replay()

    def _check_urls(self, urls: dict[str, str]) -> None:
        if urls != self.urls:
            raise UsageError(
                f"{self.path} is the state of a copy from {urls['from']} to {urls['to']}, not "
                "of this one: name another file with --state PATH"
            )

    def _replay(self) -> None:
        try:
            with self.journal_path.open("rb") as journal:
                lines = journal.read().split(b"\n")
        except FileNotFoundError:
            return
        except OSError as error:
            raise UsageError(f"cannot read {self.journal_path}: {error.strerror}") from None
        if lines and lines[0].startswith(b"{"):
            try:
                header = json.loads(lines[0])
            except ValueError:
                header = None
            if isinstance(header, dict):
                self._check_urls({"from": str(header.get("from")), "to": str(header.get("to"))})
        # The last line may be cut short by a kill: a line is used only when whole (a session
        # id is 32 lowercase hex digits, a digest too).
        for line in lines:
            parts = line.decode("ascii", "replace").split(" ")
            if len(parts) != 2 or not _is_hex(parts[0], 32):
                continue
            session_id, value = parts
            if value == "-":
                self.copied.pop(session_id, None)
            elif _is_hex(value, 32):
                self.copied[session_id] = value

    def remember(self, session_id: str, digest: str) -> None:
        self.copied[session_id] = digest
        self._append(f"{session_id} {digest}\n")

    def forget(self, session_id: str) -> None:
        if self.copied.pop(session_id, None) is not None:
            self._append(f"{session_id} -\n")

    def _append(self, line: str) -> None:
        if not self.writable:
            return
        self._pending.append(line)
        if len(self._pending) >= SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        """Writes the journal's pending lines and fsyncs it."""
        if not self.writable or not self._pending:
            return
        if self._journal is None:
            self._journal = os.open(
                self.journal_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            size = os.fstat(self._journal).st_size
            if size == 0:
                _write_all(self._journal, (json.dumps(self.urls) + "\n").encode())
            elif os.pread(self._journal, 1, size - 1) != b"\n":
                # A line cut short by a kill: ended here, so it does not run into the next.
                _write_all(self._journal, b"\n")
        _write_all(self._journal, "".join(self._pending).encode("ascii"))
        os.fsync(self._journal)
        self._pending.clear()

    def compact(self) -> None:
        """Writes the whole state atomically (temporary file, fsync, rename) and drops the
        journal it now holds."""
        if not self.writable:
            return
        self.sync()
        state = {"format": FORMAT, **self.urls, "copied": self.copied}
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(descriptor, json.dumps(state, separators=(",", ":")).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self.close()
        # Replayed over the new state, the journal would change nothing: dropping it is tidy.
        self.journal_path.unlink(missing_ok=True)

    def close(self) -> None:
        self.sync()
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
