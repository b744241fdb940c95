"""Every Python code block in README.md runs, in order, in one namespace (like a doctest file).

The namespace starts with what the prose around the blocks assumes: `tornado.web`, the module as
`session` and `tornsession`, a `secret`, a `store`, a `session_dir`, a `handler` with the cookie
methods, the app's `handlers`, and `check_password`/`name` for the login example. Paths under
/var/lib/myapp are redirected to a temporary folder. Blocks with top-level `await` run on an event
loop; unittest classes a block defines are run too.
"""

from __future__ import annotations

import ast
import asyncio
import re
import types
import unittest
from pathlib import Path
from typing import Any

import tornado.web
import tornsession
from support.handlers import CookieJarHandler

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 15


def test_every_python_block_in_the_readme_runs(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {
        "__name__": "readme",
        "tornado": tornado,
        "session": tornsession,
        "tornsession": tornsession,
        "secret": "readme-secret",
        "store": tornsession.MemoryStore(),
        "session_dir": str(tmp_path / "sessions"),
        "handler": CookieJarHandler(),
        "handlers": [],
        "check_password": lambda *args: True,
        "name": "ann",
    }
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for number, block in enumerate(python_blocks()):
        source = block.replace("/var/lib/myapp", str(tmp_path))
        code = compile(source, f"README.md python block {number}", "exec", flags=flags)
        try:
            if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits
                asyncio.run(types.FunctionType(code, namespace)())
            else:
                exec(code, namespace)
        except Exception as error:
            raise AssertionError(f"README python block {number} failed:\n{block}") from error
    # Test cases a block defines (the testing-plugin example) must pass.
    cases = [
        v for v in namespace.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)
    ]
    assert cases, "the testing example defines a test case"
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.wasSuccessful() and result.testsRun > 0, result.failures + result.errors
