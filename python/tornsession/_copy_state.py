"""The state of ``python -m tornsession copy``: for every session id it copied, the digest of
the record it wrote, so that running it again (after an interruption, or after the app switched
to the target) knows what changed where since (see ``_copy_plan.decide``).

Two files: the state itself (``PATH``, one JSON object, written atomically when a run ends) and
its journal (``PATH.journal``, a line ``<id> <digest> [<expires>]`` or ``<id> -`` per change,
appended as the run goes and fsynced every few hundred lines). ``<expires>`` is when the record
written would expire untouched (Unix seconds, to a tenth): a record gone from the source whose
copy lives longer than that was used in the target since, and is kept (``_copy_plan.decide``).
A line is appended only after the write it records succeeded: a run killed between the two
only leaves that id to be looked at again. The URLs are kept with their passwords masked, to
refuse a state made for another pair of stores.

Both are opened without following a symlink or waiting on a FIFO, and the state is replaced
through a new temporary file of a random name: a file planted beside the state (in a folder
others can write) is never written through.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
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
        #: When each record written would expire untouched (Unix seconds), where it expires.
        self.expires: dict[str, float] = {}
        self._pending: list[str] = []
        self._unsynced = 0
        self._journal: int | None = None
        self._load()

    def _load(self) -> None:
        text = _read(self.path)
        if text is not None:
            try:
                state = json.loads(text.decode("utf-8"))
                urls = {"from": state["from"], "to": state["to"]}
                copied = state["copied"]
                expires = state.get("expires", {})
                if (
                    state["format"] != FORMAT
                    or not isinstance(copied, dict)
                    or not isinstance(expires, dict)
                ):
                    raise ValueError
                self.expires = {str(k): float(v) for k, v in expires.items()}
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
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
        text = _read(self.journal_path)
        if text is None:
            return
        lines = text.split(b"\n")
        if lines and lines[0].startswith(b"{"):
            try:
                header = json.loads(lines[0])
            except (ValueError, RecursionError):
                header = None
            if isinstance(header, dict):
                self._check_urls({"from": str(header.get("from")), "to": str(header.get("to"))})
        # The last line may be cut short by a kill: a line is used only when whole (a session
        # id is 32 lowercase hex digits, a digest too).
        for line in lines:
            parts = line.decode("ascii", "replace").split(" ")
            if len(parts) not in (2, 3) or not _is_hex(parts[0], 32):
                continue
            session_id, value = parts[:2]
            if value == "-":
                self.copied.pop(session_id, None)
                self.expires.pop(session_id, None)
            elif _is_hex(value, 32):
                self.copied[session_id] = value
                self.expires.pop(session_id, None)
                if len(parts) == 3:
                    self.expires.update(_expiry(session_id, parts[2]))

    def remember(self, session_id: str, digest: str, expires: float | None = None) -> None:
        """``digest`` was written (or found) under ``session_id``, to expire untouched at
        ``expires`` (Unix seconds; None: no limit)."""
        self.copied[session_id] = digest
        self.expires.pop(session_id, None)
        if expires is None:
            self._append(f"{session_id} {digest}\n")
        else:
            self.expires[session_id] = round(expires, 1)
            self._append(f"{session_id} {digest} {expires:.1f}\n")

    def left(self, session_id: str, now: float) -> float | None:
        """The seconds the record written under ``session_id`` would have left at ``now``,
        untouched; None when it has no limit or none is known."""
        expires = self.expires.get(session_id)
        return None if expires is None else expires - now

    def forget(self, session_id: str) -> None:
        self.expires.pop(session_id, None)
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
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | _NO_FOLLOW
            try:
                self._journal = os.open(self.journal_path, flags, 0o600)
            except OSError as error:
                raise UsageError(f"cannot write {self.journal_path}: {error.strerror}") from None
            if not stat.S_ISREG(os.fstat(self._journal).st_mode):
                os.close(self._journal)
                self._journal = None
                raise UsageError(f"{self.journal_path} is not a regular file: move it away")
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
        state = {"format": FORMAT, **self.urls, "copied": self.copied, "expires": self.expires}
        # A new file of a random name (mkstemp: O_EXCL, mode 0600), never a name planted ahead.
        descriptor, temporary = tempfile.mkstemp(
            prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent
        )
        try:
            try:
                _write_all(descriptor, json.dumps(state, separators=(",", ":")).encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
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


#: Opens refuse a symlink in the file's place (ELOOP) and never wait on a FIFO.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
#: The largest state or journal read: about 5 million sessions.
MAX_STATE_BYTES = 1 << 30


def _expiry(session_id: str, text: str) -> dict[str, float]:
    """A journal line's expiry, when it is a time (a line cut short may end mid-number: then
    a shorter time, which only makes a later run keep rather than end that session)."""
    try:
        value = float(text)
    except ValueError:
        return {}
    return {session_id: value} if 0 < value < 1e11 else {}


def _read(path: Path) -> bytes | None:
    """The bytes of the state or journal file at ``path``; None when there is none. A
    symlink, a FIFO, anything but a regular file, or a file over ``MAX_STATE_BYTES`` is a
    usage error."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _NO_FOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror} (move it away)") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file: move it away")
        if info.st_size > MAX_STATE_BYTES:
            raise UsageError(f"{path} is larger than any copy state: move it away")
        chunks = []
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]
