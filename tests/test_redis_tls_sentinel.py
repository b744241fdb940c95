"""RedisStore over TLS (rediss://) and RedisSentinelStore, against real local servers: a
redis-server with TLS on a CA and certificates made here with the openssl command, and a master,
a replica and a sentinel with the master killed during the test."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import tornsession
from support.servers import HOST, ServerProcess, free_port, redis_argv, require_binary
from support.stores import saved_session

SECRET = "tls-sentinel-test-secret"


# TLS


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(openssl: str, folder: Path, *args: str) -> None:
    subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _make_ca(openssl: str, folder: Path, name: str) -> None:
    _openssl(
        openssl,
        folder,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}"),
        # What strict verifiers (Python 3.13's ssl, VERIFY_X509_STRICT) require of a CA.
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def _make_signed(openssl: str, folder: Path, name: str, ca: str, extensions: str) -> None:
    extensions += "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        openssl,
        folder,
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key"),
        *("-out", f"{name}.csr", "-subj", f"/CN={name}"),
    )
    _openssl(
        openssl,
        folder,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"),
        *("-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed; another CA."""
    openssl = require_binary("openssl")
    folder = tmp_path_factory.mktemp("pki")
    _make_ca(openssl, folder, "ca")
    _make_ca(openssl, folder, "other-ca")
    _make_signed(
        openssl,
        folder,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _make_signed(openssl, folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


def _tls_server(pki: Pki, folder: Path, *, auth_clients: bool) -> ServerProcess:
    binary = require_binary("redis-server")
    port = free_port()
    argv = redis_argv(binary, 0)
    argv += ["--tls-port", str(port), "--tls-cert-file", str(pki.server_cert)]
    argv += ["--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca)]
    argv += ["--tls-auth-clients", "yes" if auth_clients else "no"]
    server = ServerProcess(argv, port, folder)
    server.start()
    return server


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """redis-server on TLS only (`--port 0`), not asking clients for certificates."""
    server = _tls_server(pki, tmp_path_factory.mktemp("tls"), auth_clients=False)
    yield server
    server.kill()


@pytest.fixture(scope="module")
def mtls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """redis-server on TLS only, requiring a client certificate signed by the CA."""
    server = _tls_server(pki, tmp_path_factory.mktemp("mtls"), auth_clients=True)
    yield server
    server.kill()


def test_rediss_round_trip_with_ssl_ca_certs(tls_redis: ServerProcess, pki: Pki) -> None:
    store = tornsession.RedisStore(f"rediss://{HOST}:{tls_redis.port}/0", ssl_ca_certs=pki.ca)
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, user="ann", n=1)
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"user": "ann", "n": 1}
    direct = redis.Redis(
        host=HOST, port=tls_redis.port, ssl=True, ssl_ca_certs=str(pki.ca), ssl_cert_reqs="required"
    )
    assert direct.exists(f"tornsession:{s.session_id}") == 1


def test_rediss_with_an_unknown_ca_fails_with_session_store_error(
    tls_redis: ServerProcess, pki: Pki
) -> None:
    url = f"rediss://{HOST}:{tls_redis.port}/0"
    m = tornsession.SessionManager(
        SECRET, store=tornsession.RedisStore(url, ssl_ca_certs=pki.other_ca)
    )
    with pytest.raises(tornsession.SessionStoreError, match="RedisStore"):
        saved_session(m, k=1)


def test_rediss_without_ssl_ca_certs_uses_the_system_roots(tls_redis: ServerProcess) -> None:
    # Our CA is in no system trust store, so the system's roots must refuse the server.
    m = tornsession.SessionManager(
        SECRET, store=tornsession.RedisStore(f"rediss://{HOST}:{tls_redis.port}/0")
    )
    with pytest.raises(tornsession.SessionStoreError):
        saved_session(m, k=1)


def test_client_certificate_with_ssl_certfile_and_ssl_keyfile(
    mtls_redis: ServerProcess, pki: Pki
) -> None:
    url = f"rediss://{HOST}:{mtls_redis.port}/0"
    with_cert = tornsession.RedisStore(
        url, ssl_ca_certs=pki.ca, ssl_certfile=pki.client_cert, ssl_keyfile=pki.client_key
    )
    m = tornsession.SessionManager(SECRET, store=with_cert)
    s = saved_session(m, k="mtls")
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"k": "mtls"}
    without = tornsession.SessionManager(
        SECRET, store=tornsession.RedisStore(url, ssl_ca_certs=pki.ca)
    )
    with pytest.raises(tornsession.SessionStoreError):
        saved_session(without, k=1)


def test_tls_options_are_checked_at_construction(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        tornsession.RedisStore(f"redis://{HOST}:1/0", ssl_ca_certs=pki.ca)
    with pytest.raises(ValueError, match="go together"):
        tornsession.RedisStore(f"rediss://{HOST}:1/0", ssl_certfile=pki.client_cert)
    with pytest.raises(ValueError, match="cannot read ssl_ca_certs"):
        tornsession.RedisStore(f"rediss://{HOST}:1/0", ssl_ca_certs=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="rediss://"):
        tornsession.RedisClusterStore([f"redis://{HOST}:1"], ssl_ca_certs=pki.ca)
    # TLS files for the master of a sentinel setup need ssl=True.
    with pytest.raises(ValueError, match="ssl=True"):
        tornsession.RedisSentinelStore([f"{HOST}:1"], "mymaster", ssl_ca_certs=pki.ca)
    store = tornsession.RedisClusterStore([f"rediss://{HOST}:1"], ssl_ca_certs=pki.ca)
    assert store.urls == [f"rediss://{HOST}:1"]


# Sentinel

SERVICE = "mymaster"


def _role(port: int) -> str:
    info = redis.Redis(host=HOST, port=port, socket_timeout=2).info("replication")
    return str(info["role"])


def _wait(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.1)


@dataclass
class SentinelSetup:
    master: ServerProcess
    replica: ServerProcess
    sentinel: ServerProcess

    def master_port(self) -> int:
        answer = redis.Redis(host=HOST, port=self.sentinel.port, socket_timeout=2).execute_command(
            "SENTINEL", "get-master-addr-by-name", SERVICE
        )  # type: ignore[no-untyped-call]
        return int(answer[1])


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A master, its replica, and one sentinel (quorum 1) that fails over after 1 s down."""
    binary = require_binary("redis-server")
    started: list[ServerProcess] = []
    try:
        master_port = free_port()
        master = ServerProcess(redis_argv(binary, master_port), master_port, tmp_path)
        master.start()
        started.append(master)
        replica_port = free_port()
        replica_argv = redis_argv(binary, replica_port, "--replicaof", HOST, str(master_port))
        replica = ServerProcess(replica_argv, replica_port, tmp_path)
        replica.start()
        started.append(replica)
        _wait(
            "replicating",
            lambda: (
                redis.Redis(host=HOST, port=replica_port).info("replication")["master_link_status"]
                == "up"
            ),
        )
        sentinel_port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\n"
            f"bind {HOST}\n"
            f"dir {tmp_path}\n"
            f"sentinel monitor {SERVICE} {HOST} {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        sentinel = ServerProcess([binary, str(conf), "--sentinel"], sentinel_port, tmp_path)
        sentinel.start()
        started.append(sentinel)
        sentinel_client = redis.Redis(host=HOST, port=sentinel_port)
        _wait(
            "told of the replica",
            lambda: (
                len(sentinel_client.execute_command("SENTINEL", "replicas", SERVICE))  # type: ignore[no-untyped-call]
                == 1
            ),
        )
        yield SentinelSetup(master, replica, sentinel)
    finally:
        for server in started:
            server.kill()


def test_sentinel_store_finds_the_master_and_follows_a_failover(
    sentinel_setup: SentinelSetup,
) -> None:
    setup = sentinel_setup
    store = tornsession.RedisSentinelStore([f"{HOST}:{setup.sentinel.port}"], SERVICE)
    assert repr(store) == f"RedisSentinelStore(['{HOST}:{setup.sentinel.port}'], '{SERVICE}')"
    m = tornsession.SessionManager(SECRET, store=store)
    s = saved_session(m, user="ann")
    key = f"tornsession:{s.session_id}"
    assert redis.Redis(host=HOST, port=setup.master.port).exists(key) == 1
    replica = redis.Redis(host=HOST, port=setup.replica.port)
    _wait("replicated", lambda: replica.exists(key) == 1, timeout=10)

    setup.master.kill()
    # The sentinels still name the dead master: the request fails, never reads as empty.
    with pytest.raises(tornsession.SessionStoreError, match="RedisSentinelStore"):
        m.get(s.session_id, s.hmac_digest)

    # Once a replica is promoted, the same store reaches it without being told.
    failed_during = 0
    deadline = time.monotonic() + 30
    while True:
        try:
            loaded = m.get(s.session_id, s.hmac_digest)
            break
        except tornsession.SessionStoreError:
            failed_during += 1
            assert time.monotonic() < deadline, "no failover after 30 s"
            time.sleep(0.2)
    assert dict(loaded) == {"user": "ann"}
    assert setup.master_port() == setup.replica.port
    assert _role(setup.replica.port) == "master"
    loaded["after"] = "failover"
    m.set(loaded)
    assert dict(m.get(s.session_id, s.hmac_digest)) == {"user": "ann", "after": "failover"}
    assert replica.exists(key) == 1
    assert failed_during >= 1


def test_a_silent_sentinel_is_skipped_within_the_timeouts(sentinel_setup: SentinelSetup) -> None:
    # A sentinel that accepts connections and never answers (a hung host, a black hole).
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(16)
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    silent_address = f"{HOST}:{silent.getsockname()[1]}"
    try:
        alone = tornsession.RedisSentinelStore(
            [silent_address], SERVICE, connect_timeout=0.5, timeout=0.5
        )
        started = time.monotonic()
        with pytest.raises(tornsession.SessionStoreError):
            saved_session(tornsession.SessionManager(SECRET, store=alone), n=1)
        assert time.monotonic() - started < 3
        both = tornsession.RedisSentinelStore(
            [silent_address, f"{HOST}:{sentinel_setup.sentinel.port}"],
            SERVICE,
            connect_timeout=0.5,
            timeout=0.5,
        )
        started = time.monotonic()
        s = saved_session(tornsession.SessionManager(SECRET, store=both), n=2)
        assert s["n"] == 2 and time.monotonic() - started < 3, "the next sentinel answers"
    finally:
        silent.close()
        for connection in held:
            connection.close()


def test_sentinel_store_without_a_reachable_sentinel_fails_with_session_store_error() -> None:
    store = tornsession.RedisSentinelStore([f"{HOST}:{free_port()}"], SERVICE)
    m = tornsession.SessionManager(SECRET, store=store)
    with pytest.raises(tornsession.SessionStoreError, match="no master from the sentinels"):
        saved_session(m, k=1)


def test_sentinel_store_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="host:port"):
        tornsession.RedisSentinelStore(["localhost"], SERVICE)
    with pytest.raises(ValueError, match="no sentinel"):
        tornsession.RedisSentinelStore([], SERVICE)
    store = tornsession.RedisSentinelStore([f"{HOST}:26379", "[::1]:26380"], SERVICE, prefix="a/")
    assert store.sentinels == [f"{HOST}:26379", "[::1]:26380"]
    assert store.service_name == SERVICE
    assert store.prefix == "a/"
