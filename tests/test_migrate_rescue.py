"""Migrating real apps' sessions: --objects-as-dicts, --drop-key, and the warning that names the
command. The chat app of issue 13 kept OAuth token objects in its sessions (the original pickled
anything): 1 of its 10 session files converted, the other 9 kept its users logged out."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import types
from pathlib import Path

import pytest
import tornsession
from test_migrate import SECRET, original_digest, original_id, plant, run_cli
from tornsession import migrate


def oauth_token_pickle(user: str, access_token: str, expires_at: int) -> bytes:
    """What Python 2's pickle (protocol 0, the original's default) wrote for a session holding
    ``{"user": ..., "token": chat.auth.OAuthToken(...)}``, a new-style class."""
    return (
        f"(dp0\nS'user'\np1\nS'{user}'\np2\n"
        "sS'token'\np3\nccopy_reg\n_reconstructor\np4\n(cchat.auth\nOAuthToken\np5\n"
        "c__builtin__\nobject\np6\nNtp7\nRp8\n(dp9\n"
        f"S'access_token'\np10\nS'{access_token}'\np11\nsS'token_type'\np12\nS'bearer'\np13\n"
        f"sS'expires_at'\np14\nI{expires_at}\nsS'scopes'\np15\n(lp16\nS'chat:read'\np17\n"
        "aS'chat:write'\np18\nasbs."
    ).encode()


def chat_app_sessions(folder: Path) -> dict[str, dict[str, object]]:
    """The chat app's folder: one session with plain data, nine holding OAuth token objects."""
    expected: dict[str, dict[str, object]] = {}
    plain = folder / f"SESSION{original_id()}"
    plain.write_bytes(b"(dp0\nS'user'\np1\nS'guest'\np2\ns.")
    expected[plain.name] = {"user": "guest"}
    for n in range(9):
        path = folder / f"SESSION{original_id()}"
        path.write_bytes(oauth_token_pickle(f"user{n}", f"tok-{n}", 1_700_000_000 + n))
        expected[path.name] = {
            "user": f"user{n}",
            "token": {
                "access_token": f"tok-{n}",
                "token_type": "bearer",
                "expires_at": 1_700_000_000 + n,
                "scopes": ["chat:read", "chat:write"],
            },
        }
    return expected


def test_the_chat_app_with_oauth_token_objects_migrates_with_objects_as_dicts(
    session_dir: Path,
) -> None:
    expected = chat_app_sessions(session_dir)

    plain_run = run_cli(str(session_dir))
    assert plain_run.returncode == 1
    assert "converted 1, already current 0, left 9" in plain_run.stdout
    assert "holds an object of class chat.auth.OAuthToken" in plain_run.stdout

    result = run_cli("--objects-as-dicts", str(session_dir))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "converted 9, already current 1, left 0" in result.stdout
    assert "an object of class chat.auth.OAuthToken stored as a dict" in result.stdout
    # Every user's session opens with the cookie the original module gave them.
    manager = tornsession.SessionManager(SECRET, session_dir)
    for name, data in expected.items():
        session_id = name[len("SESSION") :]
        assert dict(manager.get(session_id, original_digest(session_id))) == data


def test_objects_as_dicts_never_imports_the_class_and_still_leaves_a_planted_call(
    session_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    # A module whose import would leave a mark: the class lives there, it must never load.
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "__init__.py").write_text("")
    (tmp_path / "chat" / "auth.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    token = session_dir / f"SESSION{original_id()}"
    token.write_bytes(oauth_token_pickle("ann", "t", 1))
    planted = {
        "os_system": f"(dp0\nS'user'\ncos\nsystem\n(S'touch {marker}'\ntRs.".encode(),
        "build": f"(dp0\nS'x'\n(cos\nsystem\nS'touch {marker}'\nos.".encode(),
        "top": f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode(),
        # an app class built with arguments runs its constructor: never
        "with_args": (
            b"(dp0\nS't'\nccopy_reg\n_reconstructor\n(cchat.auth\nOAuthToken\n"
            b"c__builtin__\nobject\nS'x'\ntRs."
        ),
    }
    paths = {}
    for name, blob in planted.items():
        paths[name] = session_dir / f"SESSION{original_id()}"
        paths[name].write_bytes(blob)

    report = migrate.migrate_dir(session_dir, dry_run=True, objects_as_dicts=True)
    reasons = {r.name: r.reason for r in report.files if r.outcome == "left"}
    assert reasons[paths["os_system"].name] == "key 'user': calls os.system, which is never run"

    result = migrate.main(["--objects-as-dicts", "--drop-key", "user", str(session_dir)])

    assert result == 1
    assert not marker.exists()
    assert "chat.auth" not in sys.modules
    # --drop-key drops whatever its item holds, a planted call included (never run).
    dropped = json.loads(paths.pop("os_system").read_bytes())
    assert dropped["d"] == {}
    for name, path in paths.items():
        assert path.read_bytes() == planted[name], name
    report = migrate.migrate_dir(session_dir, dry_run=True, objects_as_dicts=True)
    reasons = {r.name: r.reason for r in report.files if r.outcome == "left"}
    assert reasons[paths["build"].name] == "key 'x': calls os.system, which is never run"
    assert reasons[paths["top"].name] == "calls posix.system, which is never run"
    assert "built with arguments" in reasons[paths["with_args"].name]
    assert not marker.exists()


def test_drop_key_leaves_out_items_json_cannot_hold(session_dir: Path) -> None:
    path = plant(session_dir, "set.pickle")
    session_id = path.name[len("SESSION") :]
    cart = plant(session_dir, "old_style_object.pickle")

    assert migrate.main(["--drop-key", "tags", "--drop-key", "cart", str(session_dir)]) == 0

    manager = tornsession.SessionManager(SECRET, session_dir)
    data = dict(manager.get(session_id, original_digest(session_id)))
    assert "tags" not in data
    cart_id = cart.name[len("SESSION") :]
    assert dict(manager.get(cart_id, original_digest(cart_id))) == {}


def test_old_style_and_protocol_2_objects_become_dicts(
    session_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_style = plant(session_dir, "old_style_object.pickle")
    # A Python 3 app's pickle (protocol 2: NEWOBJ) of an object with __slots__ and a __dict__.
    module = types.ModuleType("shop_models")

    class Basket:
        __slots__ = ("__dict__", "owner")

        def __init__(self) -> None:
            self.owner = "ann"
            self.items = ["a", "b"]

    Basket.__module__ = "shop_models"
    Basket.__qualname__ = "Basket"
    module.Basket = Basket  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shop_models", module)
    newer = session_dir / f"SESSION{original_id()}"
    newer.write_bytes(pickle.dumps({"basket": Basket(), "n": 1}, protocol=2))
    monkeypatch.delitem(sys.modules, "shop_models")

    report = migrate.migrate_dir(session_dir, objects_as_dicts=True)

    assert report.converted == 2, report
    manager = tornsession.SessionManager(SECRET, session_dir)
    old_id = old_style.name[len("SESSION") :]
    assert dict(manager.get(old_id, original_digest(old_id))) == {"cart": {"items": []}}
    new_id = newer.name[len("SESSION") :]
    assert dict(manager.get(new_id, original_digest(new_id))) == {
        "basket": {"owner": "ann", "items": ["a", "b"]},
        "n": 1,
    }


def test_the_warning_for_an_unmigrated_pickle_names_the_migrate_command(
    session_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = plant(session_dir, "profile.pickle")
    session_id = path.name[len("SESSION") :]
    manager = tornsession.SessionManager(SECRET, session_dir)

    with caplog.at_level(logging.WARNING, logger="tornsession"):
        session = manager.get(session_id, original_digest(session_id))

    assert dict(session) == {}
    messages = [r.getMessage() for r in caplog.records if r.name == "tornsession"]
    assert any(f"python -m tornsession migrate {session_dir}" in m for m in messages), messages


def _dag(levels: int) -> bytes:
    """Protocol 0 lists, each holding the one before twice: a small pickle with 2**levels
    paths through it."""
    out = b"(I1\nlp0\n0"
    for level in range(1, levels + 1):
        out += b"(g%d\ng%d\nlp%d\n" % (level - 1, level - 1, level) + (
            b"0" if level < levels else b""
        )
    return out


@pytest.mark.parametrize(
    "options, blob",
    [
        # A plain run: a set elsewhere in the file makes the migrator look for what it refused.
        ([], b"(dp9999\nS'k'\n" + _dag(60) + b"sS'z'\nc__builtin__\nset\n((ltRs."),
        # --drop-key: the migrator looks for calls inside an object's state.
        (
            ["--drop-key", "k"],
            b"(dp9999\nS'k'\nccopy_reg\n_reconstructor\n(cmyapp\nUser\nc__builtin__\nobject\nNtR(dS'a'\n"
            + _dag(60)
            + b"sbs.",
        ),
    ],
    ids=["plain", "drop-key"],
)
def test_a_pickle_that_shares_one_list_many_times_over_is_handled_at_once(
    session_dir: Path, options: list[str], blob: bytes
) -> None:
    (session_dir / f"SESSION{original_id()}").write_bytes(blob)
    done = run_cli(*options, str(session_dir))  # run_cli's timeout fails a hang
    assert done.returncode in (0, 1), done.stderr


@pytest.mark.parametrize(
    "payload",
    [b"cos\ngetpid\n)R", b"cos\nsystem\n)R(dS'a'\nI1\nsb"],
    ids=["os.getpid()", "os.system() then BUILD"],
)
@pytest.mark.parametrize("options", [[], ["--objects-as-dicts"], ["--drop-key", "other"]])
def test_a_function_called_without_arguments_is_reported_and_left(
    session_dir: Path, payload: bytes, options: list[str]
) -> None:
    # REDUCE with an empty tuple calls a function, which is not how pickle builds an object of
    # an app class (NEWOBJ, OBJ, INST): the file is evidence, left as it is.
    path = session_dir / f"SESSION{original_id()}"
    blob = b"(dp0\nS'k'\np1\n" + payload + b"s."
    path.write_bytes(blob)
    done = run_cli(*options, str(session_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert path.read_bytes() == blob


@pytest.mark.parametrize(
    "payload",
    [b"cos\ngetpid\n)R", b"cos\nsystem\n)R(dS'a'\nI1\nsb"],
    ids=["os.getpid()", "os.system() then BUILD"],
)
def test_drop_key_drops_its_item_whatever_it_holds(session_dir: Path, payload: bytes) -> None:
    # The item was built by the inert unpickler: dropping it runs nothing and writes nothing.
    path = session_dir / f"SESSION{original_id()}"
    path.write_bytes(b"(dp0\nS'k'\np1\n" + payload + b"sS'name'\nS'ann'\ns.")
    done = run_cli("--drop-key", "k", str(session_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(path.read_bytes())["d"] == {"name": "ann"}
