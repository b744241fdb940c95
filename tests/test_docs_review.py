"""A reviewer's checks of claims in docs/*.md against the code: the ones that hold (kept, so
they stay true) and the ones that do not (marked FINDING, left failing)."""

from __future__ import annotations

import ast
import inspect
import re
import warnings
from pathlib import Path

import pytest
import tornsession

DOCS = Path(__file__).resolve().parent.parent / "docs"
STUB = Path(__file__).resolve().parent.parent / "python" / "tornsession" / "_core.pyi"
SECRET = "s" * 32


def manager_keywords() -> list[str]:
    """The keyword-only options of ``SessionManager.__new__`` in the stub."""
    stub = STUB.read_text()
    start = stub.index("class SessionManager:")
    signature = stub[stub.index("def __new__(", start) : stub.index(") -> Self:", start)]
    keywords = signature.split("*,", 1)[1]
    return re.findall(r"^\s+(\w+):", keywords, re.M)


def test_every_manager_option_is_in_the_options_table() -> None:
    # FINDING: docs/options.md:3 says "Every option is a keyword argument of SessionManager and
    # TornadoSessionManager" above a table that leaves out max_idle_timeout and max_lifetime
    # (the ceilings of set_expiry(); only mentioned in docs/per-user-sessions.md:72).
    table = {
        m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", (DOCS / "options.md").read_text(), re.M)
    }
    missing = [k for k in manager_keywords() if k not in table]
    assert missing == [], missing


def attribute_docstrings(path: Path, owner: str) -> set[str]:
    """The attributes of class ``owner`` in ``path`` followed by a docstring (what mkdocstrings
    shows as their text)."""
    tree = ast.parse(path.read_text())
    [cls] = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner]
    found = set()
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(target, ast.Name) and documented:
            found.add(target.id)
    return found


def test_the_mixins_session_property_has_a_reference_docstring() -> None:
    # FINDING: the API reference (docs/reference.md, mkdocstrings) shows SessionMixin.session,
    # the one name every handler uses, with its signature and no text (no docstring in
    # python/tornsession/mixin.py); likewise Session.session_id and Session.hmac_digest.
    # (Fixed: the attribute is a descriptor with a docstring of its own after its assignment,
    # which mkdocstrings shows, as it shows Session's attributes' in the stub.)
    attribute = inspect.getattr_static(tornsession.SessionMixin, "session")
    assert attribute.__doc__, "SessionMixin.session has no docstring"
    for path, owner, name in [
        (Path(tornsession.__file__).with_name("mixin.py"), "SessionMixin", "session"),
        (Path(tornsession.__file__).with_name("_core.pyi"), "Session", "session_id"),
        (Path(tornsession.__file__).with_name("_core.pyi"), "Session", "hmac_digest"),
    ]:
        assert name in attribute_docstrings(path, owner), f"{owner}.{name} has no docstring"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cookie_samesite": "None"}, "cookie_secure=True"),
        ({"max_size": 2000, "max_read_size": 1000}, "max_read_size"),
        ({"cookie_path": "/a,b"}, "cookie_path"),
        ({"cookie_domain": "a b"}, "cookie_domain"),
        ({"cookie_name": "a b"}, "cookie_name"),
        ({"order_timeout": float("nan")}, "order_timeout"),
        ({"idle_timeout": -1}, "idle_timeout"),
    ],
)
def test_options_md_bad_options_are_value_errors_naming_them(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tornsession.SessionManager(SECRET, **options)  # type: ignore[arg-type]


def test_options_md_max_size_above_the_read_limit_raises_the_read_limit() -> None:
    tornsession.SessionManager(SECRET, max_size=2 << 20)  # "1 MiB, or max_size if larger"


def test_options_md_memcached_max_size_is_at_most_1_mib_less_1_kib() -> None:
    store = tornsession.MemcachedStore(["127.0.0.1:1"])  # connects at first use only
    tornsession.SessionManager(SECRET, store=store, max_size=(1 << 20) - 1024)
    with pytest.raises(ValueError, match="max_size"):
        tornsession.SessionManager(SECRET, store=store, max_size=1 << 20)


@pytest.mark.parametrize(
    ("secret", "warned"),
    [("s" * 31, True), (b"s" * 31, True), ("s" * 32, False), (["s" * 32, "short"], True)],
)
def test_options_md_a_secret_under_32_bytes_is_warned_about(secret: object, warned: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tornsession.SessionManager(secret)  # type: ignore[arg-type]
    weak = [w for w in caught if issubclass(w.category, tornsession.WeakSecretWarning)]
    assert bool(weak) == warned


def test_cookie_sessions_md_what_a_cookie_store_refuses() -> None:
    manager = tornsession.SessionManager(SECRET, store=tornsession.CookieStore())
    with pytest.raises(ValueError):
        manager.set(manager.get())  # "SessionManager.set(session) ... raises ValueError"
    with pytest.raises(NotImplementedError):
        manager.user_sessions("u")
    with pytest.raises(NotImplementedError):
        manager.destroy_session("0" * 64)
    with pytest.raises(NotImplementedError, match="revocation="):
        manager.destroy_user_sessions("u")


def test_store_pages_defaults_and_limits() -> None:
    memory = tornsession.MemoryStore()
    assert (memory.max_sessions, memory.max_bytes) == (100_000, 256 << 20)
    with pytest.raises(ValueError):
        tornsession.MemcachedStore(["127.0.0.1:1"], prefix="a" * 187)  # "at most 186 bytes"
    tornsession.MemcachedStore(["127.0.0.1:1"], prefix="a" * 186)
    # "options ... in the query string or as keyword arguments (which win)"
    assert tornsession.store_from_url("memory:?max_sessions=5", max_sessions=7).max_sessions == 7


def test_per_user_sessions_md_set_info_and_set_user_limits() -> None:
    session = tornsession.SessionManager(SECRET).get()
    with pytest.raises(TypeError):
        session.set_user(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        session.set_info(x="a" * 3000)  # "JSON, at most 2 KiB"
