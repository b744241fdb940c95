"""tornsession.testing, used the way an app's own test suite would use it."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tornado.testing
import tornado.web
import tornsession
from tornsession.testing import (
    AppServer,
    SessionNotFound,
    SessionTestClient,
    logged_in,
    make_manager,
    read_session,
    session_cookies,
    session_headers,
    session_manager_of,
)

pytest_plugins = ["pytester"]

COOKIE_SECRET = "the-app-cookie-secret"


class App(tornado.web.Application):
    """A small app in the seed's style: the manager on the application, a session per handler."""

    def __init__(self, manager: tornsession.TornadoSessionManager, **settings: Any) -> None:
        settings.setdefault("cookie_secret", COOKIE_SECRET)
        handlers = [
            (r"/profile", ProfileHandler),
            (r"/login", LoginHandler),
            (r"/logout", LogoutHandler),
            (r"/forget", ForgetHandler),
            (r"/logout-with-goodbye", LogoutWithGoodbyeHandler),
        ]
        super().__init__(handlers, **settings)
        self.session_manager = manager


class BaseHandler(tornado.web.RequestHandler):
    application: App

    def initialize(self) -> None:
        self.session = tornsession.TornadoSession(self.application.session_manager, self)


class ProfileHandler(BaseHandler):
    """Requires session["user"]; counts the user's visits."""

    def get(self) -> None:
        user = self.session.get("user")
        if user is None:
            self.set_status(403)
            self.finish("log in first")
            return
        self.session["visits"] = self.session.get("visits", 0) + 1
        self.session.save()
        self.finish(f"hello {user}")


class LoginHandler(BaseHandler):
    def post(self) -> None:
        self.session["user"] = self.get_body_argument("name")
        self.session.save()
        self.finish("ok")


class LogoutHandler(BaseHandler):
    """Destroys the session, then sends the visitor to /profile."""

    def get(self) -> None:
        self.session.destroy()
        self.redirect("/profile")


class LogoutWithGoodbyeHandler(BaseHandler):
    """Destroys the session, then writes a flash message: a new session takes its place."""

    def get(self) -> None:
        self.session.destroy()
        self.session.flash("you are logged out")
        self.session.save()
        self.finish("bye")


class ForgetHandler(BaseHandler):
    """Empties the session but keeps it."""

    def get(self) -> None:
        self.session.clear()
        self.session.save()
        self.finish("forgotten")


class ProfileTest(tornado.testing.AsyncHTTPTestCase):
    """AsyncHTTPTestCase + the helpers (unittest classes get no fixtures: use make_manager)."""

    def get_app(self) -> App:
        self.manager = make_manager()
        self.app = App(self.manager)
        return self.app

    def test_a_logged_in_request_sees_the_user(self) -> None:
        response = self.fetch("/profile", headers=logged_in(self.app, self.manager, "ann"))
        assert response.code == 200
        assert response.body == b"hello ann"
        assert read_session(self.app, self.manager, response) == {"user": "ann", "visits": 1}

    def test_an_anonymous_request_does_not(self) -> None:
        response = self.fetch("/profile")
        assert response.code == 403
        assert "Set-Cookie" not in response.headers
        with pytest.raises(LookupError, match=r"'session_id' cookie .* was the session saved"):
            read_session(self.app, self.manager, response)

    def test_login_then_read_the_session_the_response_set(self) -> None:
        response = self.fetch("/login", method="POST", body="name=j%C3%BCrgen")
        assert response.code == 200
        assert read_session(self.app, self.manager, response) == {"user": "jürgen"}

    def test_cookies_signed_with_another_cookie_secret_are_anonymous(self) -> None:
        forged = logged_in("not-the-app-cookie-secret", self.manager, "mallory")
        response = self.fetch("/profile", headers=forged)
        assert response.code == 403
        with pytest.raises(LookupError, match="not signed with this cookie_secret"):
            read_session(self.app, self.manager, forged)

    def test_session_headers_and_read_session_round_trip(self) -> None:
        data = {"user": "ann", "cart": [1, 2], "prefs": {"lang": "de"}}
        headers = session_headers(COOKIE_SECRET, self.manager, data)
        assert read_session(COOKIE_SECRET, self.manager, headers) == data
        assert read_session(self.app, self.manager, headers["Cookie"]) == data
        response = self.fetch("/profile", headers=headers)
        assert response.body == b"hello ann"
        assert read_session(self.app, self.manager, response)["visits"] == 1


class CustomCookiesTest(tornado.testing.AsyncHTTPTestCase):
    """Other cookie names on the manager, versioned cookie secrets on the app."""

    def get_app(self) -> App:
        self.manager = make_manager(cookie_name="sid", digest_cookie_name="sig")
        self.app = App(self.manager, cookie_secret={1: "old", 2: "new"}, key_version=2)
        return self.app

    def test_cookie_names_and_key_versions_are_honoured(self) -> None:
        names = {"cookie_name": "sid", "digest_cookie_name": "sig"}
        cookie = session_cookies(self.app, self.manager, {"user": "ann"}, **names)
        assert cookie.startswith("sid=2|1:2|")
        response = self.fetch("/profile", headers={"Cookie": cookie})
        assert response.body == b"hello ann"
        assert read_session(self.app, self.manager, response, **names) == {
            "user": "ann",
            "visits": 1,
        }

    def test_a_dict_secret_without_key_version_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="key_version"):
            session_cookies({1: "old"}, self.manager, {"user": "ann"})


def test_the_fixture_gives_each_test_a_fresh_manager_and_store(
    tornsession_manager: tornsession.TornadoSessionManager, tornsession_secret: str
) -> None:
    assert isinstance(tornsession_manager, tornsession.TornadoSessionManager)
    assert "MemoryStore" in repr(tornsession_manager)
    cookie = session_cookies(COOKIE_SECRET, tornsession_manager, {"user": "ann"})
    assert read_session(COOKIE_SECRET, tornsession_manager, cookie) == {"user": "ann"}
    # The session is signed with this test's secret, not some fixed one.
    other = make_manager()
    with pytest.raises(tornsession.InvalidSessionException):
        read_session(COOKIE_SECRET, other, cookie)
    assert read_session(COOKIE_SECRET, make_manager(tornsession_secret), cookie) == {}


def test_the_client_follows_the_app_across_requests(
    tornsession_serve: Callable[..., SessionTestClient],
    tornsession_manager: tornsession.TornadoSessionManager,
) -> None:
    client = tornsession_serve(App(tornsession_manager))
    assert client.get("/profile").status == 403
    with pytest.raises(SessionNotFound, match="no signed session cookies"):
        _ = client.session

    assert client.post("/login", {"name": "jürgen"}).text == "ok"
    assert client.session == {"user": "jürgen"}
    assert client.get("/profile").text == "hello jürgen"
    assert client.get("/profile").text == "hello jürgen"
    assert client.session == {"user": "jürgen", "visits": 2}

    with client.session_transaction() as session:
        session["visits"] = 10
    assert client.get("/profile").text == "hello jürgen"
    assert client.session["visits"] == 11

    # Logging out destroys the session and redirects; the client follows with the new cookies.
    response = client.get("/logout")
    assert response.status == 403
    assert response.url.endswith("/profile")
    client.assert_session_destroyed()
    with pytest.raises(SessionNotFound):
        _ = client.session


def test_login_helper_and_an_empty_session_is_not_a_destroyed_one(
    tornsession_serve: Callable[..., SessionTestClient],
    tornsession_manager: tornsession.TornadoSessionManager,
) -> None:
    client = tornsession_serve(App(tornsession_manager))
    client.login("bob", role="admin")
    assert client.session == {"user": "bob", "role": "admin"}
    assert client.get("/profile").text == "hello bob"

    assert client.get("/forget").text == "forgotten"
    assert client.session == {}
    assert client.has_session
    with pytest.raises(AssertionError, match="still stored"):
        client.assert_session_destroyed()

    redirect = client.get("/logout", follow_redirects=False)
    assert redirect.status == 302
    assert not client.has_session
    client.assert_session_destroyed()


def test_a_logout_that_writes_a_flash_still_counts_as_destroyed(
    tornsession_serve: Callable[..., SessionTestClient],
    tornsession_manager: tornsession.TornadoSessionManager,
) -> None:
    client = tornsession_serve(App(tornsession_manager))
    client.login("bob")
    assert client.get("/logout-with-goodbye").text == "bye"
    assert client.has_session, "the flash lives in a new session"
    assert client.session == {"_flashes": [["info", "you are logged out"]]}
    client.assert_session_destroyed()
    assert client.get("/forget").text == "forgotten"  # emptied, not destroyed
    with pytest.raises(AssertionError, match="still stored"):
        client.assert_session_destroyed()


def test_the_client_works_without_fixtures_and_against_another_server() -> None:
    manager = make_manager()
    app = App(manager, session_manager=manager)
    assert session_manager_of(app) is manager
    with AppServer(app) as server, SessionTestClient(app, base_url=server.url("")) as client:
        client.login("ann")
        assert client.get("/profile").text == "hello ann"
    with pytest.raises(LookupError, match="no TornadoSessionManager"):
        session_manager_of(tornado.web.Application())


def test_tornsession_testing_imports_without_pytest() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # import pytest now fails, as where it is not installed
        import tornado.web
        import tornsession.testing as testing
        manager = testing.make_manager()
        app = tornado.web.Application(cookie_secret="x", session_manager=manager)
        with testing.SessionTestClient(app) as client:
            client.login("ann")
            assert client.session == {"user": "ann"}
        assert not hasattr(testing, "tornsession_manager")
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_the_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert [(e.name, e.value) for e in entry_points if e.name == "tornsession"] == [
        ("tornsession", "tornsession._pytest_plugin")
    ]


@pytest.fixture
def users_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester run as a user's own suite runs: plugins autoload, no options from ours."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return pytester


USER_SUITE = '''
    """A user's suite: no conftest.py, no pytest_plugins, only pip install tornsession."""

    import asyncio

    import tornado.httpclient
    import tornado.httpserver
    import tornado.testing
    import tornado.web

    import tornsession
    from tornsession.testing import logged_in, read_session


    class Hello(tornado.web.RequestHandler):
        def get(self):
            session = tornsession.TornadoSession(self.application.settings["manager"], self)
            user = session.get("user")
            if user is None:
                raise tornado.web.HTTPError(403)
            session["seen"] = True
            session.save()
            self.write("hello " + user)


    def fetch(manager, headers):
        async def run():
            app = tornado.web.Application(
                [("/", Hello)], cookie_secret="user-secret", manager=manager
            )
            sock, port = tornado.testing.bind_unused_port()
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets([sock])
            try:
                return app, await tornado.httpclient.AsyncHTTPClient().fetch(
                    f"http://127.0.0.1:{port}/", headers=headers, raise_error=False
                )
            finally:
                server.stop()

        return asyncio.run(run())


    def test_fixture_is_there(tornsession_manager):
        assert isinstance(tornsession_manager, tornsession.TornadoSessionManager)


    def test_logged_in_user_is_seen(tornsession_manager):
        headers = logged_in("user-secret", tornsession_manager, "ann")
        app, response = fetch(tornsession_manager, headers)
        assert response.code == 200
        assert response.body == b"hello ann"
        assert read_session(app, tornsession_manager, response) == {"user": "ann", "seen": True}


    def test_anonymous_is_refused(tornsession_manager):
        app, response = fetch(tornsession_manager, {})
        assert response.code == 403
'''


def test_a_users_suite_gets_the_fixtures_without_any_conftest(
    users_pytester: pytest.Pytester,
) -> None:
    users_pytester.makepyfile(test_user_app=textwrap.dedent(USER_SUITE))
    assert not list(users_pytester.path.glob("conftest.py"))

    result = users_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")

    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*plugins:*tornsession*"])


CLIENT_SUITE = '''
    """A user's suite with an app fixture: the tornsession_client fixture serves it."""

    import pytest
    import tornado.web

    import tornsession
    from tornsession.testing import SessionNotFound


    class Login(tornsession.SessionMixin, tornado.web.RequestHandler):
        def post(self):
            self.session["user"] = self.get_body_argument("name")
            self.redirect("/me")


    class Me(tornsession.SessionMixin, tornado.web.RequestHandler):
        def get(self):
            self.write({"user": self.session.get("user")})


    @pytest.fixture
    def app(tornsession_manager):
        return tornado.web.Application(
            [("/login", Login), ("/me", Me)],
            cookie_secret="user-secret",
            session_manager=tornsession_manager,
        )


    def test_log_in_and_follow_the_redirect(tornsession_client):
        assert tornsession_client.post("/login", {"name": "ann"}).json() == {"user": "ann"}
        assert tornsession_client.session == {"user": "ann"}


    def test_force_login(tornsession_client):
        with pytest.raises(SessionNotFound):
            tornsession_client.session
        tornsession_client.login("bob")
        assert tornsession_client.get("/me").json() == {"user": "bob"}
'''


def test_a_users_suite_gets_a_client_for_its_app_fixture(
    users_pytester: pytest.Pytester,
) -> None:
    users_pytester.makepyfile(test_user_client=textwrap.dedent(CLIENT_SUITE))

    result = users_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")

    result.assert_outcomes(passed=2)


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/migrate-and-testing.md in ``language``."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "migrate-and-testing.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_every_python_example_in_the_docs_runs(
    users_pytester: pytest.Pytester,
) -> None:
    blocks = doc_blocks("python")
    assert len(blocks) == 3
    for number, block in enumerate(blocks):
        users_pytester.makepyfile(**{f"test_doc_{number}": block})

    result = users_pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=4)
