"""A Python 3 port of the original 2009 ``session.py`` that tornsession replaces.

Kept faithful on purpose (pickled files, md5 ids, HMAC-SHA1 digest with the id as key, loading
in ``__init__``, cookies on every save): it is the baseline for benchmarks and for tests that
show what tornsession fixes. Do not use it in an app.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import uuid
from typing import Any


class InvalidSessionException(Exception):
    pass


class Session(dict):  # type: ignore[type-arg]
    def __init__(self, session_id: Any, hmac_digest: Any) -> None:
        self.session_id = session_id
        self.hmac_digest = hmac_digest


class SessionManager:
    def __init__(self, secret: str, session_dir: str = "") -> None:
        self.secret = secret
        self.session_dir = session_dir

    def _get_session_path(self, session_id: str) -> str:
        return os.path.join(self.session_dir, "SESSION" + str(session_id))

    def _read_file(self, session_id: str) -> dict[str, Any]:
        try:
            with open(self._get_session_path(session_id), "rb") as f:
                data: dict[str, Any] = pickle.load(f)
            return data
        except OSError:
            return {}

    def _write_file(self, session_id: str, session_data: dict[str, Any]) -> None:
        with open(self._get_session_path(session_id), "wb") as f:
            pickle.dump(session_data, f, protocol=0)

    def _generate_uid(self) -> str:
        return hashlib.md5((self.secret + str(uuid.uuid4())).encode()).hexdigest()

    def _get_hmac_digest(self, session_id: str) -> str:
        return hmac.new(session_id.encode(), self.secret.encode(), hashlib.sha1).hexdigest()

    def get(self, session_id: Any = None, hmac_digest: Any = None) -> Session:
        if isinstance(session_id, bytes):
            session_id = session_id.decode()
        if isinstance(hmac_digest, bytes):
            hmac_digest = hmac_digest.decode()
        if session_id is None:
            session_id = self._generate_uid()
            return Session(session_id, self._get_hmac_digest(session_id))
        if hmac_digest != self._get_hmac_digest(session_id):
            raise InvalidSessionException()
        session = Session(session_id, hmac_digest)
        session.update(self._read_file(session_id))
        return session

    def set(self, session: Session) -> None:
        self._write_file(session.session_id, dict(session.items()))


class TornadoSessionManager(SessionManager):
    def get(self, requestHandler: Any = None) -> Session:  # type: ignore[override]
        if requestHandler is None:
            return super().get()
        session_id = requestHandler.get_secure_cookie("session_id")
        hmac_digest = requestHandler.get_secure_cookie("hmac_digest")
        return super().get(session_id, hmac_digest)

    def set(self, requestHandler: Any, session: Session) -> None:  # type: ignore[override]
        requestHandler.set_secure_cookie("session_id", session.session_id)
        requestHandler.set_secure_cookie("hmac_digest", session.hmac_digest)
        super().set(session)


class TornadoSession(Session):
    def __init__(
        self, tornado_session_manager: TornadoSessionManager, request_handler: Any
    ) -> None:
        self.session_manager = tornado_session_manager
        self.request_handler = request_handler
        try:
            plain_session = tornado_session_manager.get(request_handler)
        except InvalidSessionException:
            plain_session = tornado_session_manager.get()
        for i, j in plain_session.items():
            self[i] = j
        self.session_id = plain_session.session_id
        self.hmac_digest = plain_session.hmac_digest

    def save(self) -> None:
        self.session_manager.set(self.request_handler, self)
