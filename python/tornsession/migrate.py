"""Convert the original ``session.py``'s pickled session files to tornsession's JSON format.

Usage::

    python -m tornsession migrate [--dry-run] [--drop-key KEY ...] [--objects-as-dicts] SESSION_DIR
    python -m tornsession migrate [options] --from memcached://HOST:PORT[,...] [--to URL]

Every ``SESSION<id>`` file in ``SESSION_DIR`` is read without ever running code from it: the
pickle is loaded by an unpickler that refuses every class and function lookup, so only plain
dicts, lists, tuples, strings, numbers, booleans and None can come out of it; a file that names
a class or function is read again by one whose every lookup is an inert stand-in made here
(nothing is imported or run). The standard library's values (datetime, date, time, timedelta,
Decimal, set, frozenset) are rebuilt from their pickles' arguments in the JSON form
``tornsession._stdlib_values`` documents. A file that holds anything else (a model object, a
call, something JSON cannot store) is reported by name and key and left exactly as it was.
Converted files are written atomically (a temporary file in the same folder, then
``os.replace``) and keep their mode, owner (when run as root) and modification time.

Two options rescue sessions of apps that kept their own objects in sessions (the original
pickled anything):

- ``--drop-key KEY`` (repeatable): leave the top-level item ``KEY`` out of every converted
  session, whatever it holds (a cache the app rebuilds, an object nobody needs after the
  switch).
- ``--objects-as-dicts``: an object of an app class (``copy_reg._reconstructor`` or an old-style
  instance, with no constructor arguments) becomes the dict of its pickled instance state, when
  that state is JSON-able; the class is never imported. A pickle that calls anything else (a
  function such as ``os.system``, a class with arguments) is still reported and left.

The second pass's stand-ins only record the arguments they are "called" with, so nothing
named in the file is imported or run.

Exit status: 0 when every session file is current afterwards, 1 when some were left as they
were, 2 for a usage error (no such folder).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import os
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tornsession._stdlib_values import STDLIB_VALUES, NotAValue, set_items, stdlib_value
from tornsession._unpickle import (
    _RECONSTRUCTORS,
    _SETS,
    MAX_DEPTH,
    MAX_VALUES,
    UnsupportedSession,
    _decode_py2_str,
    _fix_surrogates,
    _Inert,
    _load_inert,
    _object_state,
    load_original_pickle,
)

__all__ = [
    "FORMAT_VERSION",
    "FileResult",
    "MigrationReport",
    "UnsupportedSession",
    "convert_data",
    "encode_record",
    "load_original_pickle",
    "main",
    "migrate_dir",
    "migrate_file",
    "migrate_memcached",
    "record_binding",
]

FORMAT_VERSION = 1
"""The version number tornsession writes in every record (``"v"``)."""
FILE_PREFIX = "SESSION"
"""The prefix of every session file's name, as in the original module."""
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
MAX_TEXT = 64 * 1024 * 1024
"""The most characters of text a converted session may hold (64 Mi; far above what a session
can be saved with, far below what would exhaust the migrator's memory)."""
_ID_CHARS = frozenset("0123456789abcdef")

Outcome = Literal["converted", "current", "left"]
"""What became of one session: converted (or, in a dry run, would be), already in tornsession's
format, or left as it was (with a reason)."""


@dataclass
class _Budget:
    remaining: int = MAX_VALUES
    #: Characters of text the converted session may hold once shared references are expanded.
    text: int = MAX_TEXT
    notes: list[str] = field(default_factory=list)
    objects_as_dicts: bool = False


def _convert(value: Any, key: str, depth: int, budget: _Budget) -> Any:
    budget.remaining -= 1
    if budget.remaining < 0:
        raise UnsupportedSession(f"holds more than {MAX_VALUES} values once expanded", key)
    if depth > MAX_DEPTH:
        raise UnsupportedSession(f"holds values nested deeper than {MAX_DEPTH} levels", key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise UnsupportedSession("holds an int beyond 64 bits, which is not stored", key)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedSession("holds NaN or infinity, which JSON cannot store", key)
        return value
    if isinstance(value, (str, bytes)):
        # A pickle can reference one long string many times over; JSON would copy it each time.
        budget.text -= len(value)
        if budget.text < 0:
            raise UnsupportedSession(
                f"holds more than {MAX_TEXT} characters of text once expanded", key
            )
    if isinstance(value, str):
        try:
            return _fix_surrogates(value)
        except UnsupportedSession as error:
            raise UnsupportedSession(error.reason, key) from None
    if isinstance(value, bytes):
        text, latin1 = _decode_py2_str(value)
        if latin1:
            budget.notes.append(f"key {key!r}: bytes that are not UTF-8 decoded as Latin-1")
        return text
    if isinstance(value, (list, tuple)):
        return [_convert(item, key, depth + 1, budget) for item in value]
    if isinstance(value, (set, frozenset)):
        return _set_as_list(value, key, depth, budget)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for inner_key, item in value.items():
            text_key = _string_key(inner_key, key, budget)
            if text_key in out:
                raise UnsupportedSession(f"holds a dict with key {text_key!r} twice", key)
            out[text_key] = _convert(item, key, depth + 1, budget)
        return out
    if isinstance(value, _Inert):
        return _convert_inert(value, key, depth, budget)
    raise UnsupportedSession(f"holds a {type(value).__name__}, which JSON cannot store", key)


def _set_as_list(items: Any, key: str, depth: int, budget: _Budget) -> list[Any]:
    """A set's items as a JSON list, each once (a Python 2 str and unicode that decode alike
    were two items), sorted when they can be (a set has no order to keep)."""
    unique: dict[str, Any] = {}
    for item in items:
        converted_item = _convert(item, key, depth + 1, budget)
        unique.setdefault(json.dumps(converted_item, sort_keys=True), converted_item)
    converted = list(unique.values())
    try:
        return sorted(converted)
    except TypeError:
        return converted


def _convert_inert(value: _Inert, key: str, depth: int, budget: _Budget) -> Any:
    qualname = type(value).qualname
    try:
        if qualname in _SETS:
            return _set_as_list(set_items(value), key, depth, budget)
        if qualname in STDLIB_VALUES:
            converted = stdlib_value(value)
            if isinstance(converted, str):
                return _convert(converted, key, depth, budget)  # counted as text
            return converted
    except NotAValue as error:
        raise UnsupportedSession(f"holds a {qualname} that cannot be read: {error}", key) from None
    found = _object_state(value)
    if found is None:
        if qualname in _RECONSTRUCTORS and value.args and isinstance(value.args[0], type):
            qualname = getattr(value.args[0], "qualname", qualname)
            raise UnsupportedSession(
                f"holds an object of class {qualname} built with arguments, which is never run",
                key,
            )
        raise UnsupportedSession(f"calls {qualname}, which is never run", key)
    class_name, state = found
    if not budget.objects_as_dicts:
        raise UnsupportedSession(
            f"holds an object of class {class_name}, which is never loaded "
            "(--objects-as-dicts converts it to the dict of its state)",
            key,
        )
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        # (dict or None, slots): the state of a class with __slots__.
        merged: dict[Any, Any] = dict(state[0] or {})
        merged.update(state[1])
        state = merged
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise UnsupportedSession(
            f"holds an object of class {class_name} whose state is a "
            f"{type(state).__name__}, not a dict of attributes",
            key,
        )
    converted = _convert(state, key, depth + 1, budget)
    budget.notes.append(f"key {key!r}: an object of class {class_name} stored as a dict")
    return converted


def _string_key(raw: Any, where: str | None, budget: _Budget) -> str:
    if isinstance(raw, bytes):
        text, latin1 = _decode_py2_str(raw)
        if latin1:
            budget.notes.append(f"key {text!r}: a name that is not UTF-8 decoded as Latin-1")
        return text
    if isinstance(raw, str):
        try:
            return _fix_surrogates(raw)
        except UnsupportedSession as error:
            raise UnsupportedSession(error.reason, where) from None
    kind = type(raw).qualname if isinstance(raw, _Inert) else type(raw).__name__
    if isinstance(raw, _Inert):
        raise UnsupportedSession(f"has a key that is a {kind}: session keys are strings", where)
    if where is None:
        raise UnsupportedSession(f"has a key {raw!r} of type {kind}: session keys are strings")
    raise UnsupportedSession(f"holds a dict with a {kind} key: JSON object keys are strings", where)


def convert_data(
    value: Any, *, drop_keys: Sequence[str] = (), objects_as_dicts: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Turns an unpickled session into JSON-ready data, plus notes (Latin-1 fallbacks, objects
    stored as dicts, dropped keys).

    Top-level items named in ``drop_keys`` are left out. Raises :class:`UnsupportedSession`
    naming the key for anything tornsession cannot store.
    """
    if isinstance(value, _Inert) and _object_state(value) is None:
        raise UnsupportedSession(f"calls {type(value).qualname}, which is never run")
    if not isinstance(value, dict):
        what = type(value).qualname if isinstance(value, _Inert) else type(value).__name__
        raise UnsupportedSession(f"the pickle holds a {what}, not a dict of session items")
    budget = _Budget(objects_as_dicts=objects_as_dicts)
    data: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = _string_key(raw_key, None, budget)
        if key in drop_keys:
            # Whatever it holds: nothing in it was ever run (the inert pass built it).
            budget.notes.append(f"key {key!r}: dropped (--drop-key)")
            continue
        if key in data:
            raise UnsupportedSession("appears twice once decoded", key)
        data[key] = _convert(item, key, 0, budget)
    return data, budget.notes


def record_binding(session_id: str) -> str:
    """The ``"k"`` of a record saved under ``session_id``: 12 base64url characters of a
    domain-separated SHA-256 of the id, as the Rust core computes it
    (``crates/core/src/codec.rs``)."""
    digest = hashlib.sha256(b"tornsession record binding v1\0" + session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


def encode_record(created: int, data: dict[str, Any], session_id: str | None = None) -> bytes:
    """tornsession's stored form, byte for byte as the Rust core writes it.

    ``{"k":<binding>,"v":1,"c":<created>,"d":{...}}``: envelope fields in that order, data keys
    in their order (the core keeps insertion order), no spaces, non-ASCII text as UTF-8. ``"k"``
    binds the record to ``session_id`` (loads refuse a record bound to another id); without a
    ``session_id`` it is left out, as in the records of tornsession 0.1.0, which still load.
    """
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    bound = "" if session_id is None else f'"k":"{record_binding(session_id)}",'
    return f'{{{bound}"v":{FORMAT_VERSION},"c":{int(created)},"d":{body}}}'.encode()


def _is_current(blob: bytes) -> bool:
    if not blob.lstrip().startswith(b"{"):
        return False
    try:
        record = json.loads(blob.decode("utf-8"))
    except ValueError:
        return False
    return (
        isinstance(record, dict)
        and record.get("v") == FORMAT_VERSION
        and isinstance(record.get("c"), int)
        and not isinstance(record.get("c"), bool)
        and isinstance(record.get("d"), dict)
    )


@dataclass
class FileResult:
    """What happened (or would happen) to one session file."""

    name: str
    """The file's name (``SESSION<id>``), or the key, for memcached."""
    outcome: Outcome
    """What became of it."""
    reason: str = ""
    """Why it was left, naming the key and what it holds."""
    notes: list[str] = field(default_factory=list)
    """What a conversion changed on the way (a dropped key, an object turned into a dict)."""


@dataclass
class MigrationReport:
    """The outcome of one folder's migration."""

    files: list[FileResult] = field(default_factory=list)
    """Each session's result, in the folder's order."""

    def count(self, outcome: Outcome) -> int:
        """How many files had ``outcome``."""
        return sum(1 for f in self.files if f.outcome == outcome)

    @property
    def converted(self) -> int:
        """Files converted (or, in a dry run, that would be)."""
        return self.count("converted")

    @property
    def current(self) -> int:
        """Files already in tornsession's format, untouched."""
        return self.count("current")

    @property
    def left(self) -> int:
        """Files left exactly as they were, each with a reason."""
        return self.count("left")


def _valid_id(session_id: str) -> bool:
    return len(session_id) == 32 and all(ch in _ID_CHARS for ch in session_id)


def _write_atomically(path: Path, blob: bytes, before: os.stat_result) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".tmp-migrate-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(before.st_mode))
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                os.fchown(out.fileno(), before.st_uid, before.st_gid)
            os.fsync(out.fileno())
        os.utime(temporary, ns=(before.st_atime_ns, before.st_mtime_ns))
        now = os.lstat(path)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        ):
            raise UnsupportedSession("changed while it was being migrated; run again")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _load_and_convert(
    blob: bytes, drop_keys: Sequence[str], objects_as_dicts: bool
) -> tuple[dict[str, Any], list[str]]:
    try:
        value = load_original_pickle(io.BytesIO(blob))
    except UnsupportedSession:
        # A class or function was named: read it again with inert stand-ins (nothing named is
        # imported or run), so a datetime, a set, a dropped key or an object of an app class
        # need not leave the whole file behind.
        value = _load_inert(blob)
    return convert_data(value, drop_keys=drop_keys, objects_as_dicts=objects_as_dicts)


def migrate_file(
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    drop_keys: Sequence[str] = (),
    objects_as_dicts: bool = False,
) -> FileResult:
    """Converts one ``SESSION<id>`` file in place; never raises for a bad file, reports it.

    ``drop_keys`` and ``objects_as_dicts`` are the ``--drop-key`` and ``--objects-as-dicts``
    options (see the module's documentation).
    """
    path = Path(path)
    name = path.name
    try:
        before = os.lstat(path)
    except OSError as error:
        return FileResult(name, "left", f"cannot read it: {error.strerror}")
    if stat.S_ISLNK(before.st_mode):
        return FileResult(name, "left", "a symbolic link, not followed")
    if not stat.S_ISREG(before.st_mode):
        return FileResult(name, "left", "not a regular file")
    if not _valid_id(name[len(FILE_PREFIX) :]):
        return FileResult(name, "left", "the name is not SESSION + a 32-hex-digit session id")
    try:
        with open(path, "rb") as stream:
            blob = stream.read()
    except OSError as error:
        return FileResult(name, "left", f"cannot read it: {error.strerror}")
    if _is_current(blob):
        return FileResult(name, "current")
    try:
        data, notes = _load_and_convert(blob, drop_keys, objects_as_dicts)
        record = encode_record(int(before.st_mtime), data, name[len(FILE_PREFIX) :])
        if not dry_run:
            _write_atomically(path, record, before)
    except UnsupportedSession as error:
        return FileResult(name, "left", str(error))
    except OSError as error:
        return FileResult(name, "left", f"cannot write it: {error.strerror or error}")
    return FileResult(name, "converted", notes=notes)


def migrate_dir(
    session_dir: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    drop_keys: Sequence[str] = (),
    objects_as_dicts: bool = False,
) -> MigrationReport:
    """Converts every ``SESSION*`` file of ``session_dir``; other files are not looked at.

    Raises ``NotADirectoryError`` / ``FileNotFoundError`` when ``session_dir`` is not a folder.
    """
    folder = Path(session_dir)
    if not folder.exists():
        raise FileNotFoundError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    report = MigrationReport()
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(FILE_PREFIX):
            report.files.append(
                migrate_file(
                    folder / entry,
                    dry_run=dry_run,
                    drop_keys=drop_keys,
                    objects_as_dicts=objects_as_dicts,
                )
            )
    return report


def migrate_memcached(
    url: str,
    *,
    to: str | None = None,
    dry_run: bool = False,
    drop_keys: Sequence[str] = (),
    objects_as_dicts: bool = False,
) -> MigrationReport:
    """Converts the original module's pickles that an app's own copy kept in memcached under
    the raw session id (``url``: ``memcached://host:port,...``), listing the keys with
    ``lru_crawler metadump`` (memcached 1.4.31 or later). Each is written, with the time it had
    left, as tornsession's record into the store ``to`` names (default: the same servers under
    tornsession's key prefix, or the URL's own ``?prefix=``), only where none is there yet: run
    it again and what was converted is "already current". The raw keys are left to expire.

    ValueError for a URL that is not ``memcached://``; SessionStoreError when a server cannot
    be reached or listed.
    """
    from tornsession import CookieStore, MemcachedStore, MemoryStore, _core
    from tornsession.store_url import store_from_url

    raw = store_from_url(url, prefix="")
    if not isinstance(raw, MemcachedStore):
        raise ValueError("--from takes a memcached:// URL (the servers the original module used)")
    target = store_from_url(to if to is not None else url)
    if isinstance(target, (MemoryStore, CookieStore)):
        raise ValueError(
            "--to names a store whose sessions live in one process (memory:) or in the "
            "browsers (cookie:): name the store your app uses"
        )
    report = MigrationReport()
    for session_id in sorted(_core._store_session_ids(raw)):
        listed = _core._store_load_listed(raw, session_id)
        if listed is None:
            continue  # expired or deleted since the listing
        blob, time_left = listed
        if _is_current(blob):
            report.files.append(FileResult(session_id, "current"))
            continue
        try:
            data, notes = _load_and_convert(blob, drop_keys, objects_as_dicts)
        except UnsupportedSession as error:
            report.files.append(FileResult(session_id, "left", str(error)))
            continue
        record = encode_record(int(time.time()), data, session_id)
        if not dry_run and not _core._store_copy_in(target, session_id, record, time_left, None):
            report.files.append(FileResult(session_id, "current"))
            continue
        report.files.append(FileResult(session_id, "converted", notes=notes))
    return report


def _print_report(report: MigrationReport, dry_run: bool, out: Any) -> None:
    verb = "would convert" if dry_run else "converted"
    for result in report.files:
        if result.outcome == "left":
            print(f"left {result.name}: {result.reason}", file=out)
        for note in result.notes:
            print(f"note {result.name}: {note}", file=out)
    prefix = "dry run, nothing changed: " if dry_run else ""
    print(
        f"{prefix}{verb} {report.converted}, already current {report.current}, left {report.left}",
        file=out,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m tornsession.migrate") -> int:
    """The command line: ``python -m tornsession.migrate [--dry-run] [--drop-key KEY ...]
    [--objects-as-dicts] SESSION_DIR``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert the original session.py's pickled SESSION<id> files to "
        "tornsession's JSON format, in place and atomically; or, with --from, the pickles an "
        "app's copy kept in memcached. Never runs code from a pickle.",
    )
    parser.add_argument(
        "session_dir", metavar="SESSION_DIR", nargs="?", help="the folder of SESSION files"
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="memcached://host:port,... : the pickles kept there under the raw session id",
    )
    parser.add_argument(
        "--to",
        metavar="URL",
        help="with --from: the store to write into (default: the same memcached servers, "
        "under tornsession's key prefix)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would happen, change nothing"
    )
    parser.add_argument(
        "--drop-key",
        action="append",
        default=[],
        metavar="KEY",
        help="leave the top-level session item KEY out (repeatable)",
    )
    parser.add_argument(
        "--objects-as-dicts",
        action="store_true",
        help="store an object of an app class as the dict of its pickled state (the class is "
        "never imported; a pickle that calls a function is still left)",
    )
    args = parser.parse_args(argv)
    if (args.session_dir is None) == (args.source is None):
        parser.error("give either SESSION_DIR or --from URL")
    if args.to is not None and args.source is None:
        parser.error("--to goes with --from")
    if args.source is not None:
        return _main_memcached(args)
    try:
        report = migrate_dir(
            args.session_dir,
            dry_run=args.dry_run,
            drop_keys=args.drop_key,
            objects_as_dicts=args.objects_as_dicts,
        )
    except (FileNotFoundError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PermissionError as error:
        print(f"error: cannot list {args.session_dir}: {error.strerror}", file=sys.stderr)
        return 2
    _print_report(report, args.dry_run, sys.stdout)
    return 1 if report.left else 0


def _main_memcached(args: argparse.Namespace) -> int:
    from tornsession import SessionStoreError

    try:
        report = migrate_memcached(
            args.source,
            to=args.to,
            dry_run=args.dry_run,
            drop_keys=args.drop_key,
            objects_as_dicts=args.objects_as_dicts,
        )
    except (ValueError, NotImplementedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SessionStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_report(report, args.dry_run, sys.stdout)
    return 1 if report.left else 0


if __name__ == "__main__":
    sys.exit(main())
