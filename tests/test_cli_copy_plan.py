"""`python -m tornsession copy`'s pure parts: the per-session decision as a table (issue 22's
contract, cases 1-7), the state file and its journal (a torn last line, a state of another copy,
no password written), the progress bar's line, and the secrets read from the environment."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tornsession._cli_common import UsageError, secrets_from_env
from tornsession._copy_plan import Action, Record, decide, digest, written_at
from tornsession._copy_state import CopyState, default_path
from tornsession._progress import Progress


def rec(name: str, written: int = 100, remaining: float | None = 3600.0) -> Record:
    """A record whose digest is that of ``name``, written at ``written``, with ``remaining``
    seconds left."""
    return Record(digest(name.encode()), written, remaining)


def mark(name: str) -> str:
    return digest(name.encode())


S, T = rec("s"), rec("t")
OLD = rec("old")

# (case, source, target, remembered, action)
TABLE: list[tuple[str, Record | None, Record | None, str | None, Action]] = [
    ("1 never copied, none in target", S, None, None, Action.COPY_NEW),
    ("2 never copied, same bytes in target", S, rec("s"), None, Action.REMEMBER),
    ("2 never copied, source newer", rec("s", 200), rec("t", 100), None, Action.COPY_OVER),
    ("2 never copied, target newer", rec("s", 100), rec("t", 200), None, Action.KEEP_TARGET),
    (
        "2 never copied, a tie keeps the target",
        rec("s", 100),
        rec("t", 100),
        None,
        Action.KEEP_TARGET,
    ),
    (
        "2 never copied, no times keep the target",
        rec("s", 0),
        rec("t", 0),
        None,
        Action.KEEP_TARGET,
    ),
    ("3 copied, ended in target", S, None, mark("old"), Action.SKIP_ENDED),
    ("3 copied, ended in target, source changed", rec("new"), None, mark("s"), Action.SKIP_ENDED),
    ("4 copied, source unchanged", S, rec("s"), mark("s"), Action.UNCHANGED),
    ("4 copied, source unchanged, target used since", S, T, mark("s"), Action.UNCHANGED),
    ("5 copied, source changed, target not", S, OLD, mark("old"), Action.COPY_OVER),
    ("6 both changed, source newer", rec("s", 300), rec("t", 200), mark("old"), Action.COPY_OVER),
    ("6 both changed, target newer", rec("s", 200), rec("t", 300), mark("old"), Action.KEEP_TARGET),
    ("6 both changed alike", S, rec("s"), mark("old"), Action.REMEMBER),
    ("7 ended in source, target as copied", None, OLD, mark("old"), Action.DELETE),
    ("7 ended in source, target used since", None, T, mark("old"), Action.KEEP_USED),
    ("7 ended in source and target", None, None, mark("old"), Action.FORGET),
    # A read of an idle session moves its expiry on in the source without changing the record.
    (
        "4 source read since: expiry moves on",
        rec("s", 1, 900),
        rec("s", 1, 600),
        mark("s"),
        Action.EXTEND,
    ),
    (
        "4 within the slack: nothing",
        rec("s", 1, 601),
        rec("s", 1, 600),
        mark("s"),
        Action.UNCHANGED,
    ),
    (
        "4 target read since: nothing",
        rec("s", 1, 600),
        rec("s", 1, 900),
        mark("s"),
        Action.UNCHANGED,
    ),
    ("4 no limit in the source", rec("s", 1, None), rec("s", 1, 600), mark("s"), Action.EXTEND),
    ("4 no limit in the target", rec("s", 1, 600), rec("s", 1, None), mark("s"), Action.UNCHANGED),
    (
        "4 target used since, source read",
        rec("s", 1, 900),
        rec("t", 1, 600),
        mark("s"),
        Action.UNCHANGED,
    ),
    ("2 same bytes, source read since", rec("s", 1, 900), rec("s", 1, 600), None, Action.EXTEND),
    ("ended in source before it was copied", None, T, None, Action.FORGET),
]


@pytest.mark.parametrize(
    ("case", "source", "target", "remembered", "action"), TABLE, ids=[row[0] for row in TABLE]
)
def test_copy_decides_each_case_of_the_contract(
    case: str,
    source: Record | None,
    target: Record | None,
    remembered: str | None,
    action: Action,
) -> None:
    assert decide(source, target, remembered) is action


def test_only_copies_write_and_each_action_has_a_summary_count() -> None:
    assert {a for a in Action if a.writes} == {Action.COPY_NEW, Action.COPY_OVER, Action.EXTEND}
    counted = {"copied", "extended", "unchanged", "kept", "skipped-ended", "deleted", "gone"}
    assert {a.counted_as for a in Action} == counted
    assert len(set(Action)) == 10, "every action a member of its own (none an alias)"


def test_a_records_time_is_the_later_of_created_and_last_seen() -> None:
    assert written_at(b'{"k":"x","v":1,"c":100,"d":{}}') == 100
    assert written_at(b'{"k":"x","v":1,"c":100,"d":{},"u":"ann","s":180}') == 180
    assert written_at(b'{"v":1,"c":true,"d":{}}') == 0
    assert written_at(b"(dp0\nS'a'\np1\nI1\ns.") == 0  # a pickle: unreadable, no time
    assert written_at(b"[1,2]") == 0
    assert len(digest(b"x")) == 32


def test_the_state_replays_its_journal_and_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    url_from, url_to = "redis://u:s3cret@127.0.0.1:1/0", "sqlite:///tmp/x.db"
    state = CopyState(path, url_from, url_to, writable=True)
    for n in range(600):  # more than a batch: some lines synced before the end
        state.remember(f"{n:032x}", mark(str(n)))
    state.forget(f"{5:032x}")
    state.close()
    with state.journal_path.open("ab") as journal:
        journal.write(f"{7:032x} {mark('seven')[:10]}".encode())  # killed mid-line
    again = CopyState(path, url_from, url_to, writable=True)
    assert len(again.copied) == 599
    assert again.copied[f"{7:032x}"] == mark("7")
    assert f"{5:032x}" not in again.copied
    # Appended after the cut line, a new line starts a line of its own.
    again.remember(f"{9999:032x}", mark("new"))
    again.close()
    again = CopyState(path, url_from, url_to, writable=True)
    assert len(again.copied) == 600 and again.copied[f"{9999:032x}"] == mark("new")
    again.compact()
    assert not again.journal_path.exists()
    saved = path.read_text()
    assert "s3cret" not in saved and "u:***@127.0.0.1" in saved
    assert CopyState(path, url_from, url_to, writable=False).copied == again.copied


def test_a_state_of_another_copy_or_not_a_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = CopyState(path, "redis://127.0.0.1:1/0", "sqlite:///a.db", writable=True)
    state.remember("a" * 32, mark("a"))
    state.compact()
    with pytest.raises(UsageError, match="not of this one: name another file with --state"):
        CopyState(path, "redis://127.0.0.1:1/0", "sqlite:///b.db", writable=True)
    path.write_text("{}")
    with pytest.raises(UsageError, match="is not the state of a tornsession copy"):
        CopyState(path, "redis://127.0.0.1:1/0", "sqlite:///a.db", writable=True)


def test_a_dry_run_state_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = CopyState(path, "redis://127.0.0.1:1/0", "sqlite:///a.db", writable=False)
    state.remember("a" * 32, mark("a"))
    state.compact()
    assert list(tmp_path.iterdir()) == []


def test_the_default_state_is_named_by_a_hash_of_both_urls() -> None:
    one = default_path("redis://:pw@h/0", "sqlite:///a.db")
    assert one.parent == Path(".") and "pw" not in one.name
    assert one.name.startswith(".tornsession-copy-") and one.suffix == ".json"
    assert one != default_path("sqlite:///a.db", "redis://:pw@h/0")


def test_the_progress_line_shows_count_bar_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = Progress("copy", 20_000, stream, interactive=True)
    progress._started -= 2.0
    progress.done = 5_000
    line = progress.line()
    assert line.startswith("copy 5,000/20,000 [") and "25%" in line
    assert "/s ETA 0:0" in line and "#" in line
    progress.advance(15_000)
    progress.close()
    drawn = stream.getvalue()
    assert drawn.startswith("\r") and drawn.endswith("\n") and "20,000/20,000" in drawn
    quiet = io.StringIO()
    off = Progress("copy", 10, quiet, interactive=False)
    off.advance(10)
    off.close()
    assert quiet.getvalue() == ""


def test_the_secret_is_one_string_or_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_SECRET", "plain secret, with, commas")
    assert secrets_from_env("APP_SECRET") == "plain secret, with, commas"
    monkeypatch.setenv("APP_SECRET", json.dumps(["new", "old"]))
    assert secrets_from_env("APP_SECRET") == ["new", "old"]
    for bad, says in [
        ("[new, old]", "not a JSON list of secrets"),
        ("[]", "one or more non-empty secrets"),
        ('["a", 5]', "one or more non-empty secrets"),
    ]:
        monkeypatch.setenv("APP_SECRET", bad)
        with pytest.raises(UsageError, match=says):
            secrets_from_env("APP_SECRET")
    monkeypatch.delenv("APP_SECRET")
    with pytest.raises(UsageError, match=r"APP_SECRET, which is not set.*never taken from the"):
        secrets_from_env("APP_SECRET")
