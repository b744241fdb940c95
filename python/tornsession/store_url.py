"""``store_from_url``: any tornsession store from one URL, so an app configures its sessions from
one setting or environment variable::

    store = tornsession.store_from_url(os.environ.get("SESSION_STORE", "memory:"))

========================================================  ===================================
URL                                                       store
========================================================  ===================================
``memory:``                                               ``MemoryStore()``
``cookie:`` (``?revocation=<a store URL>``)               ``CookieStore()``
``file:///var/lib/app/sessions``                          ``FileStore(path)``
``sqlite:///var/lib/app/sessions.db``                     ``SqliteStore(path)``
``redis://[user:password@]host[:port][/db]``, ``rediss:`` ``RedisStore(url)``
``redis+cluster://host:port,host:port`` (``rediss+``)     ``RedisClusterStore(urls)``
``redis+sentinel://host:port,host:port/service[/db]``     ``RedisSentinelStore(...)``
``memcached://host:port,host:port``                       ``MemcachedStore(servers)``
========================================================  ===================================

The stores' options go in the query string (``?prefix=app:&timeout=0.5``, ``?durable=1``), or
as keyword arguments, which win (``revocation=`` of a ``CookieStore``, objects, paths). A URL
that is not one of these, or an option a store does not take or a value it cannot be, is a
``ValueError`` that names what is wrong, passwords masked. The network stores connect at first
use; a ``FileStore`` makes its folder and a ``SqliteStore`` its file here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from tornsession._core import (
    CookieStore,
    FileStore,
    MemcachedStore,
    MemoryStore,
    RedisClusterStore,
    RedisSentinelStore,
    RedisStore,
    SqliteStore,
)

__all__ = ["store_from_url"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"not a yes/no value (1/0, true/false, yes/no, on/off): {text!r}")


_NETWORK: dict[str, Callable[[str], Any]] = {
    "prefix": str,
    "connect_timeout": float,
    "timeout": float,
    "pool_size": int,
}
_TLS: dict[str, Callable[[str], Any]] = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
}
# The query options each scheme takes, and how each value is read.
_OPTIONS: dict[str, dict[str, Callable[[str], Any]]] = {
    "memory": {"max_sessions": int, "max_bytes": int},
    # A revocation store as a URL of its own, percent-encoded where it has a query.
    "cookie": {"revocation": lambda text: _revocation_store(text)},
    "file": {"durable": _flag},
    "sqlite": {"timeout": float, "durable": _flag},
    "redis": {**_NETWORK, **_TLS},
    "redis+cluster": {**_NETWORK, **_TLS},
    "redis+sentinel": {**_NETWORK, **_TLS, "username": str, "password": str},
    "memcached": _NETWORK,
}
_ALIASES = {
    "rediss": "redis",
    "rediss+cluster": "redis+cluster",
    "rediss+sentinel": "redis+sentinel",
    "memcache": "memcached",
}


def _revocation_store(url: str) -> Any:
    # A CookieStore keeps no records: it cannot be one's revocation store (nor nest).
    if url.strip().lower().startswith("cookie:"):
        raise ValueError("a revocation store keeps records on a server; cookie: keeps none")
    return store_from_url(url)


# What each reader makes of an option's text, for the error when it cannot.
_READS = {int: "whole number", float: "number", _flag: "yes/no value"}


def store_from_url(url: str, **options: Any) -> Any:
    """The store ``url`` names (see the module's table), with the options of its query string
    and ``options`` (which win)."""
    if not isinstance(url, str):
        raise TypeError(f"store_from_url takes the URL as a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:
        raise ValueError(f"store URL {_masked(url)!r}: {error}") from None
    scheme = parts.scheme.lower()
    kind = _ALIASES.get(scheme, scheme)
    if kind not in _OPTIONS:
        known = ", ".join(f"{name}:" for name in [*_OPTIONS, *_ALIASES])
        raise ValueError(f"store URL {_masked(url)!r}: unknown scheme {scheme!r}; one of {known}")
    given = {**_query_options(url, kind, parts.query), **options}
    make = _MAKERS[kind]
    try:
        return make(parts, scheme, given)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"store URL {_masked(url)!r}: {error}") from None


def _query_options(url: str, kind: str, query: str) -> dict[str, Any]:
    readers = _OPTIONS[kind]
    options: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in readers:
            takes = ", ".join(sorted(readers)) or "none"
            raise ValueError(
                f"store URL {_masked(url)!r}: {kind}: takes no option {name!r} (it takes: {takes})"
            )
        if name in options:
            raise ValueError(f"store URL {_masked(url)!r}: option {name!r} given twice")
        try:
            options[name] = readers[name](text)
        except (ValueError, OverflowError) as error:
            what = _READS.get(readers[name], "store URL")
            # A password is never shown; a nested store URL says itself what is wrong.
            shown = "" if name == "password" else f"={_masked(text)!r}"
            cause = "" if what == "store URL" else f": {error}"
            raise ValueError(
                f"store URL {_masked(url)!r}: option {name}{shown} is not a {what}{cause}"
                + (f" ({error})" if what == "store URL" else "")
            ) from None
    return options


# `scheme://user:` then a password up to the next `@` (one may hold an unescaped `/`, `?`, `#`:
# masking too much is safe, too little is not; never across a space, so that in an error's
# text `://127.0.0.1:6379 ... @script` is no password), and a `password=` query value.
_PASSWORD_IN_USERINFO = re.compile(r"(://[^/?#@:\s]*:)[^@\s]*@")
_PASSWORD_IN_QUERY = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def _masked(url: str) -> str:
    """The URL (or an error's text holding URLs), percent-decoded (a nested store URL
    included), with every password replaced, for error messages (they reach logs). Each level
    is masked before it is decoded: a password's own escaped `@` (`%40`) or `&` (`%26`) is
    never read as where it ends."""
    text = url
    for _ in range(8):  # a URL nested in a URL nested in ...: each level decodes once
        text = _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_USERINFO.sub(r"\1***@", text))
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return _PASSWORD_IN_QUERY.sub(r"\1***", _PASSWORD_IN_USERINFO.sub(r"\1***@", text))


def _no_location(parts: Any, scheme: str) -> None:
    if parts.netloc or parts.path:
        raise ValueError(f"{scheme}: takes no host or path (write {scheme}: and options after '?')")


def _path(parts: Any, scheme: str) -> str:
    if parts.netloc:
        raise ValueError(
            f"{scheme}: a path must be absolute, as {scheme}:///var/lib/app/sessions "
            f"(three slashes); {parts.netloc!r} reads as a host"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError(f"{scheme}: a path must be absolute, as {scheme}:///var/lib/app/sessions")
    if "\0" in path:
        raise ValueError(f"{scheme}: a path cannot hold a NUL character")
    if path == "/:memory:":
        raise ValueError(
            "sqlite: keeps sessions in a file that processes share; for sessions in this "
            "process's memory use memory:"
        )
    return path


def _hosts(parts: Any, scheme: str, default_port: int) -> list[str]:
    """``host:port`` of each comma-separated server in the netloc (IPv6 in brackets)."""
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not netloc:
        raise ValueError(f"{scheme}: names no server (write {scheme}://host:port)")
    hosts = []
    for host in netloc.split(","):
        if host.startswith("["):
            end = host.find("]")
            name, rest = host[: end + 1], host[end + 1 :]
            port = rest[1:] if rest.startswith(":") else ("" if rest else str(default_port))
            if end < 0:
                name = ""
        else:
            name, sep, port = host.partition(":")
            port = port if sep else str(default_port)
        if not name:
            raise ValueError(f"{scheme}: {host!r} is not host:port")
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            # The port is not shown: in a URL cut short by an unescaped '/', '?' or '#' it is
            # a password.
            raise ValueError(
                f"{scheme}: the port after {name!r} is not a number from 1 to 65535 (a password "
                "holding '/', '?' or '#' must be percent-encoded)"
            )
        hosts.append(f"{unquote(name)}:{port}")
    return hosts


def _db_path(parts: Any, scheme: str, allowed: bool) -> None:
    """Refuses a path that is not a Redis db number where one is allowed, and any where not."""
    path = parts.path.strip("/")
    if not path:
        return
    if not allowed:
        raise ValueError(f"{scheme}: takes no path (a {path!r} here would be ignored)")
    if not (path.isascii() and path.isdigit()) or int(path) > 2**31 - 1:
        raise ValueError(f"{scheme}: the path is a db number, as {scheme}://host:6379/0")


def _memory(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    _no_location(parts, scheme)
    return MemoryStore(**options)


def _cookie(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    _no_location(parts, scheme)
    return CookieStore(**options)


def _file(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    return FileStore(_path(parts, scheme), **options)


def _sqlite(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    return SqliteStore(_path(parts, scheme), **options)


def _redis(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    _hosts(parts, scheme, 6379)  # checked here, for the same errors as the other schemes
    _db_path(parts, scheme, allowed=True)
    return RedisStore(urlunsplit(parts._replace(query="", fragment="")), **options)


def _redis_cluster(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    _db_path(parts, scheme, allowed=False)  # a cluster has db 0 only
    node_scheme = "rediss" if scheme.startswith("rediss") else "redis"
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    urls = [f"{node_scheme}://{credentials}{host}" for host in _hosts(parts, scheme, 6379)]
    return RedisClusterStore(urls, **options)


def _redis_sentinel(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    sentinels = _hosts(parts, scheme, 26379)
    names = [unquote(name) for name in parts.path.split("/") if name]
    if not names or len(names) > 2:
        raise ValueError(
            f"{scheme}: the path is the master's service name and an optional db, as "
            f"{scheme}://host:26379/mymaster/0"
        )
    if len(names) == 2:
        if not (names[1].isascii() and names[1].isdigit()) or int(names[1]) > 2**31 - 1:
            raise ValueError(f"{scheme}: the db after the service name is a number: {names[1]!r}")
        options.setdefault("db", int(names[1]))
    if scheme.startswith("rediss"):
        options.setdefault("ssl", True)
    # Credentials before the sentinels are the master's, as RedisSentinelStore takes them.
    if parts.username:
        options.setdefault("username", unquote(parts.username))
    if parts.password is not None:
        options.setdefault("password", unquote(parts.password))
    return RedisSentinelStore(sentinels, names[0], **options)


def _memcached(parts: Any, scheme: str, options: dict[str, Any]) -> Any:
    if "@" in parts.netloc:
        raise ValueError(f"{scheme}: takes no user or password (memcached has no logins)")
    _db_path(parts, scheme, allowed=False)
    return MemcachedStore(_hosts(parts, scheme, 11211), **options)


_MAKERS: dict[str, Callable[[Any, str, dict[str, Any]], Any]] = {
    "memory": _memory,
    "cookie": _cookie,
    "file": _file,
    "sqlite": _sqlite,
    "redis": _redis,
    "redis+cluster": _redis_cluster,
    "redis+sentinel": _redis_sentinel,
    "memcached": _memcached,
}
