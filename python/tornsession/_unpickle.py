"""Reading the original ``session.py``'s pickles without running anything from them (for
:mod:`tornsession.migrate`): a restricted unpickler that refuses every class and function
lookup, one that names what was refused and where, and one whose lookups return inert
stand-ins that only record their arguments (``--objects-as-dicts``, ``--drop-key``)."""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

#: How deep values may nest, as at ``save()``.
MAX_DEPTH = 120
#: How many values one session may hold after shared references are expanded (a pickle can
#: reference one list many times; JSON would copy it each time).
MAX_VALUES = 1_000_000


class UnsupportedSession(Exception):
    """A session file that cannot be converted; ``key`` names the top-level key when known."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key

    def __str__(self) -> str:
        if self.key is None:
            return self.reason
        return f"key {self.key!r}: {self.reason}"


class _RefusedLookup(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads plain containers and scalars only: every class or function lookup is refused.

    Protocol 0 pickles of dict, list, tuple, str, unicode, int, long, float, bool and None need
    no lookup; sets, objects, ``copy_reg._reconstructor`` and anything a malicious pickle would
    call (``os.system``) all go through here and are refused before anything is built or called.
    """

    def find_class(self, module: str, name: str, /) -> Any:
        raise _RefusedLookup(module, name)

    def persistent_load(self, pid: Any, /) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


class _Placeholder:
    """Stands in for a refused class or function in the diagnostic pass; calling it builds an
    inert ``_Opaque`` and runs nothing else."""

    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> _Opaque:
        # copy_reg._reconstructor(cls, base, state): the interesting name is the class's.
        if args and isinstance(args[0], _Placeholder):
            return _Opaque(args[0].qualname)
        return _Opaque(self.qualname)


class _Opaque:
    """What a refused object became in the diagnostic pass: its class name and nothing else."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __setstate__(self, state: Any) -> None:
        pass


class _LocatingUnpickler(pickle.Unpickler):
    """Only used after the restricted pass refused a lookup, to find which key held it: every
    lookup returns a ``_Placeholder`` (our own inert code), so nothing from the file runs."""

    def find_class(self, module: str, name: str, /) -> Any:
        return _Placeholder(module, name)

    def persistent_load(self, pid: Any, /) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


class _Inert:
    """Base of the stand-ins :class:`_InertUnpickler` makes for every global a pickle names.

    A pickle can only call what ``find_class`` returns; here that is a fresh subclass of this,
    so "calling" ``os.system('...')`` builds an ``_Inert`` holding the arguments and runs
    nothing. ``__setstate__`` keeps the state the pickle sets (``BUILD``).
    """

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        inert = object.__new__(cls)
        inert.args = args
        inert.kwargs = kwargs
        inert.state = None
        inert.has_state = False
        inert.called = False
        return inert

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Only a call (REDUCE, or INST with arguments) runs __init__; building an instance
        # the way pickle does for objects (NEWOBJ, OBJ, INST without arguments) does not.
        self.called = True

    def __setstate__(self, state: Any) -> None:
        self.state = state
        self.has_state = True

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    has_state: bool
    called: bool


_RECONSTRUCTORS = frozenset({"copy_reg._reconstructor", "copyreg._reconstructor"})
_OBJECT_BASES = frozenset({"__builtin__.object", "builtins.object"})
_SETS = frozenset(
    {"__builtin__.set", "builtins.set", "__builtin__.frozenset", "builtins.frozenset"}
)


class _InertUnpickler(pickle.Unpickler):
    """Every lookup gives a new ``_Inert`` subclass named after it: nothing is imported."""

    def find_class(self, module: str, name: str, /) -> Any:
        return type(name, (_Inert,), {"qualname": f"{module}.{name}", "__module__": __name__})

    def persistent_load(self, pid: Any, /) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def _load_inert(blob: bytes) -> Any:
    try:
        return _InertUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as error:
        raise UnsupportedSession(
            f"not a readable pickle ({type(error).__name__}: {error})"
        ) from None


def _object_state(value: _Inert) -> tuple[str, Any] | None:
    """(class name, instance state) when ``value`` is an object of an app class built the way
    pickle builds one without calling its code; ``None`` for anything else (a call)."""
    qualname = type(value).qualname
    if value.kwargs:
        return None
    if qualname in _RECONSTRUCTORS:
        # copy_reg._reconstructor(cls, object, None): a plain new-style instance.
        if len(value.args) != 3 or value.args[2] is not None:
            return None
        cls, base = value.args[0], value.args[1]
        if not (isinstance(cls, type) and issubclass(cls, _Inert)):
            return None
        if not (isinstance(base, type) and issubclass(base, _Inert)):
            return None
        if base.qualname not in _OBJECT_BASES or cls.qualname in _RECONSTRUCTORS:
            return None
        return cls.qualname, value.state
    if value.args or value.called:
        return None
    # An old-style instance (INST/OBJ) or a protocol 2 one (NEWOBJ), with no arguments.
    return qualname, value.state


def _refusal_reason(refused: _RefusedLookup, located: str | None) -> str:
    qualname = f"{refused.module}.{refused.name}"
    if qualname in ("__builtin__.set", "builtins.set", "__builtin__.frozenset"):
        return f"holds a {refused.name}, which JSON cannot store"
    if qualname in ("copy_reg._reconstructor", "copyreg._reconstructor"):
        what = f"class {located}" if located and located != qualname else "a class"
        return f"holds an object of {what}, which is never loaded (only plain data is converted)"
    return f"needs {qualname}, which is never loaded (only plain data is converted)"


def _find_opaque(value: Any, depth: int = 0, seen: set[int] | None = None) -> str | None:
    """The first refused lookup inside ``value``; each object looked at once (a pickle can share
    one container many times over, and walking every path through such a graph would never
    end)."""
    if isinstance(value, (_Opaque, _Placeholder)):
        return value.qualname
    seen = set() if seen is None else seen
    if depth > MAX_DEPTH or id(value) in seen or len(seen) > MAX_VALUES:
        return None
    seen.add(id(value))
    items: Any = ()
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, (list, tuple)):
        items = value
    for item in items:
        found = _find_opaque(item, depth + 1, seen)
        if found is not None:
            return found
    return None


def _locate_refused(blob: bytes) -> tuple[str | None, str | None]:
    """The top-level key and the class name of the first refused object, when they can be found."""
    try:
        top = _LocatingUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception:
        return None, None
    if not isinstance(top, dict):
        return None, None
    for key, value in top.items():
        found = _find_opaque(value)
        if found is not None:
            return _text_key(key), found
    return None, None


def _text_key(key: Any) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return _decode_py2_str(key)[0]
    return None


def _decode_py2_str(raw: bytes) -> tuple[str, bool]:
    """A Python 2 ``str``: UTF-8 when it is UTF-8, else Latin-1 (every byte maps to one char)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def _fix_surrogates(text: str) -> str:
    """Python 2 narrow builds wrote characters beyond U+FFFF as two surrogates: join them."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if any("\ud800" <= ch <= "\udfff" for ch in joined):
        raise UnsupportedSession("holds a string with a lone surrogate, which is not valid text")
    return joined


def load_original_pickle(stream: BinaryIO) -> Any:
    """Unpickles one session file of the original module without running anything from it.

    Python 2 ``str`` values come back as ``bytes`` (decode them with :func:`convert_data`);
    any class or function lookup raises :class:`UnsupportedSession`.
    """
    blob = stream.read()
    try:
        unpickler = _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes")
        value = unpickler.load()
    except _RefusedLookup as refused:
        key, qualname = _locate_refused(blob)
        raise UnsupportedSession(_refusal_reason(refused, qualname), key) from None
    except Exception as error:
        raise UnsupportedSession(
            f"not a readable pickle ({type(error).__name__}: {error})"
        ) from None
    return value
